"""events found by chain only

An instance's events are its chain ("instance:<id>"), found through the unique (chain, seq) index;
the index on event.instance_id only cost a page write per appended event.

Revision ID: 9a7e3c5d2b10
Revises: 5d1f0a2b7c91
Create Date: 2026-11-30 09:40:00

"""
from typing import Sequence, Union

from alembic import op


revision: str = '9a7e3c5d2b10'
down_revision: Union[str, Sequence[str], None] = '5d1f0a2b7c91'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_event_instance_id'))


def downgrade() -> None:
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_event_instance_id'), ['instance_id'], unique=False)
