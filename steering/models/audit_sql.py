"""Triggers that make steering_change append-only below the ORM (migrations 0002 and 0007).

The one update allowed is the foreign key's ON DELETE SET NULL when a user is removed
(actor_id to NULL, nothing else changing); actor_name keeps who it was.
"""

POSTGRES_CREATE = """
CREATE OR REPLACE FUNCTION steering_change_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE'
       AND NEW.actor_id IS NULL
       AND (to_jsonb(NEW) - 'actor_id') = (to_jsonb(OLD) - 'actor_id') THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'steering_change is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER steering_change_no_update BEFORE UPDATE ON steering_change
    FOR EACH ROW EXECUTE FUNCTION steering_change_append_only();
CREATE TRIGGER steering_change_no_delete BEFORE DELETE ON steering_change
    FOR EACH ROW EXECUTE FUNCTION steering_change_append_only();
CREATE TRIGGER steering_change_no_truncate BEFORE TRUNCATE ON steering_change
    FOR EACH STATEMENT EXECUTE FUNCTION steering_change_append_only();
"""

# The test runner empties tables between transactional tests; only it lifts the TRUNCATE guard.
POSTGRES_ALLOW_TRUNCATE = "ALTER TABLE steering_change DISABLE TRIGGER steering_change_no_truncate;"
POSTGRES_FORBID_TRUNCATE = "ALTER TABLE steering_change ENABLE TRIGGER steering_change_no_truncate;"

POSTGRES_DROP = """
DROP TRIGGER IF EXISTS steering_change_no_update ON steering_change;
DROP TRIGGER IF EXISTS steering_change_no_delete ON steering_change;
DROP TRIGGER IF EXISTS steering_change_no_truncate ON steering_change;
DROP FUNCTION IF EXISTS steering_change_append_only();
"""

_SQLITE_SAME_EXCEPT_ACTOR = " AND ".join(
    f"NEW.{col} IS OLD.{col}"
    for col in (
        "id", "time", "actor_name", "source", "request_id", "action", "object_type", "object_id",
        "object_repr", "related_type", "related_id", "related_repr", "operation_id", "reason",
        "forced", "force_reason", "before", "after", "version",
    )
)

SQLITE_CREATE = [
    f"""
CREATE TRIGGER steering_change_no_update BEFORE UPDATE ON steering_change
WHEN NOT (NEW.actor_id IS NULL AND {_SQLITE_SAME_EXCEPT_ACTOR})
BEGIN SELECT RAISE(ABORT, 'steering_change is append-only: UPDATE refused'); END;
""",
    """
CREATE TRIGGER steering_change_no_delete BEFORE DELETE ON steering_change
BEGIN SELECT RAISE(ABORT, 'steering_change is append-only: DELETE refused'); END;
""",
]

SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS steering_change_no_update;",
    "DROP TRIGGER IF EXISTS steering_change_no_delete;",
]

# The chain's columns (migration 0007) on SQLite: a trigger of their own, so the two above stay as
# migration 0002 made them (and as the test runner lifts and restores them around its flush).
# PostgreSQL's trigger compares whole rows (to_jsonb) and covers new columns by itself.
SQLITE_CHAIN_CREATE = [
    """
CREATE TRIGGER steering_change_chain_no_update BEFORE UPDATE ON steering_change
WHEN NOT (NEW.token_id IS OLD.token_id AND NEW.token_name IS OLD.token_name
          AND NEW.prev_hash IS OLD.prev_hash AND NEW.hash IS OLD.hash)
BEGIN SELECT RAISE(ABORT, 'steering_change is append-only: UPDATE refused'); END;
""",
]

SQLITE_CHAIN_DROP = ["DROP TRIGGER IF EXISTS steering_change_chain_no_update;"]
