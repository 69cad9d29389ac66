"""Alembic environment: the database URL comes from service.config, never from the ini."""

from alembic import context

from service.db.sessions import get_engine
from service.db.tables import Base

config = context.config
url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url") or None


def run_offline() -> None:
    context.configure(
        url=url or str(get_engine().url),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    with get_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        conn.commit()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
