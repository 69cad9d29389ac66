"""What routes take from FastAPI besides their parameters."""

from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from service.db import request_session

# The route's unit of work: committed (or rolled back) when the route returns, before the
# response is sent, so a client that reads right after a write sees it.
DB = Annotated[Session, Depends(request_session, scope="function")]
