"""Alembic's environment and revisions, a package so that they ship in the wheel (see
service.cli.migrate); Alembic reads the files, nothing imports them."""
