"""The sync-trigger DDL, built by pure functions: names, quoting, NEW./OLD. rewriting, each engine's form."""

from __future__ import annotations

import pytest

from backfilld.engines.base import Column
from backfilld.engines.sqltext import as_dialect, split_table
from backfilld.engines.statements import LookupSpec, lookup_expr
from backfilld.engines.triggers import (
    build_install_sql,
    build_remove_sql,
    referenced_columns,
    rewrite_columns,
    tokenize,
    trigger_names,
)
from backfilld.errors import SchemaError

USERS = {"id": "bigint", "email": "varchar(200)", "name": "varchar(200)", "deleted": "int", "domain": "varchar(200)",
         "date": "date", "day": "int", "year": "int", "created": "datetime", "email2": "text"}


def new(sql: str, columns: dict[str, str] = USERS, table: str = "users") -> str:
    return rewrite_columns(sql, "mysql", columns, table, "NEW")


# ------------------------------------------------------------------------------------------ names


def test_names_are_deterministic_short_and_per_table() -> None:
    a = trigger_names("users", "users_email_domain")
    assert a == trigger_names("users", "users_email_domain")
    assert a.insert.startswith("bf_users_email_domain_") and a.insert.endswith("_ins")
    assert a.update.endswith("_upd") and a.function.endswith("_fn")
    assert trigger_names("accounts", "users_email_domain").insert != a.insert  # MySQL names are per schema
    assert trigger_names("app.users", "users_email_domain") == a  # the schema is where they live, not the name
    long = trigger_names("t", "x" * 64)
    assert max(len(n) for n in (long.insert, long.update, long.function)) <= 63
    # job names may hold '.' and '-': sanitized, and the hash keeps "a.b" and "a-b" apart
    assert trigger_names("t", "a.b").insert != trigger_names("t", "a-b").insert
    assert set(trigger_names("t", "Job.Name-1").insert) <= set("abcdefghijklmnopqrstuvwxyz0123456789_")


# ------------------------------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize("dialect", ["mysql", "postgresql", "sqlite"])
def test_tokens_concatenate_back_to_the_text(dialect: str) -> None:
    sql = "lower(substr(email, instr(email, '@') + 1)) || 'it''s' /* c */ -- end\n + 1.5e-3 + `x` + \"y\""
    assert "".join(t.text for t in tokenize(sql, dialect)) == sql


def test_unterminated_quote_is_an_error() -> None:
    with pytest.raises(ValueError, match="unterminated"):
        tokenize("lower('abc)", "mysql")


# ------------------------------------------------------------------------------------------ MySQL rewriting


def test_columns_get_new_functions_do_not() -> None:
    assert new("lower(substring_index(email, '@', -1))") == "lower(substring_index(NEW.`email`, '@', -1))"
    assert new("CONCAT(name, '#', id)") == "CONCAT(NEW.`name`, '#', NEW.`id`)"


def test_string_literals_naming_columns_are_left_alone() -> None:
    assert new("CONCAT(name, 'name', \"email\", 'it''s id', 'back\\'s id')") == \
        "CONCAT(NEW.`name`, 'name', \"email\", 'it''s id', 'back\\'s id')"


def test_a_function_named_like_a_column_is_a_function() -> None:
    cols = {"id": "int", "lower": "varchar(10)", "concat": "varchar(10)"}
    assert new("lower(concat(lower, concat ('x')))", cols) == "lower(concat(NEW.`lower`, concat ('x')))"


def test_quoted_case_insensitive_and_qualified_references() -> None:
    assert new("`email` = EMAIL") == "NEW.`email` = NEW.`email`"
    assert new("users.email") == "NEW.`email`"
    assert new("`users`.`email`") == "NEW.`email`"
    assert new("other.email + users.lower(x) + db.fn(id)") == "other.email + users.lower(x) + db.fn(NEW.`id`)"
    assert new("email2 || email") == "NEW.`email2` || NEW.`email`"


def test_keywords_in_keyword_places_are_not_columns() -> None:
    assert new("CAST(created AS date)") == "CAST(NEW.`created` AS date)"
    assert new("date + 1") == "NEW.`date` + 1"
    assert new("EXTRACT(YEAR FROM created) + year") == "EXTRACT(YEAR FROM NEW.`created`) + NEW.`year`"
    assert new("created + INTERVAL day DAY") == "NEW.`created` + INTERVAL NEW.`day` DAY"
    assert new("DATE_ADD(created, INTERVAL (day + 1) DAY)") == "DATE_ADD(NEW.`created`, INTERVAL (NEW.`day` + 1) DAY)"
    assert new("TIMESTAMPDIFF(DAY, created, date)") == "TIMESTAMPDIFF(DAY, NEW.`created`, NEW.`date`)"
    assert new("CONVERT(name USING utf8mb4) COLLATE utf8mb4_bin") == \
        "CONVERT(NEW.`name` USING utf8mb4) COLLATE utf8mb4_bin"


def test_variables_introducers_comments_numbers() -> None:
    assert new("@email + @@id + _utf8mb4'email' + N'name' + X'1F'") == \
        "@email + @@id + _utf8mb4'email' + N'name' + X'1F'"
    assert new("id /* id */ + 1e5 -- id\n# name\n+ id") == "NEW.`id` /* id */ + 1e5 -- id\n# name\n+ NEW.`id`"


def test_postgres_and_sqlite_references() -> None:
    pg = {"id": "bigint", "Email": "text", "email": "text", "date": "date"}
    assert referenced_columns('lower("Email") || email || \'id\' || $x$ id $x$ || E\'\\\' id\'', "postgresql",
                              pg, "t") == ["Email", "email"]
    assert referenced_columns("date::date + id::int", "postgresql", pg, "t") == ["date", "id"]
    assert referenced_columns("[Email] || `ID` || \"date\"", "sqlite", {"email": "", "id": "", "date": ""},
                              "t") == ["email", "id", "date"]


# ------------------------------------------------------------------------------------------ PostgreSQL


def test_postgres_function_evaluates_over_the_record() -> None:
    stmts = build_install_sql("postgresql", "app.users", USERS, ["id"], {"domain": "lower(split_part(email, '@', 2))"},
                              "deleted = 0", False, "dom")
    n = trigger_names("app.users", "dom")
    assert stmts[:2] == [f'DROP TRIGGER IF EXISTS "{n.insert}" ON "app"."users"',
                         f'DROP TRIGGER IF EXISTS "{n.update}" ON "app"."users"']
    fn = stmts[2]
    assert fn.startswith(f'CREATE OR REPLACE FUNCTION "app"."{n.function}"() RETURNS trigger LANGUAGE plpgsql '
                         "SET search_path FROM CURRENT AS $bf$\n#variable_conflict use_column\n")
    assert fn.endswith("$bf$")
    assert 'bf_n0 "app"."users"."domain"%TYPE;' in fn
    assert ("SELECT true, (lower(split_part(email, '@', 2))) INTO bf_match, bf_n0 FROM (SELECT NEW.*) AS \"users\" "
            "WHERE (deleted = 0);") in fn
    assert "FROM (SELECT OLD.*) AS \"users\"" in fn
    assert 'OLD."domain" COLLATE "C" IS NOT DISTINCT FROM bf_o0 COLLATE "C"' in fn   # text: byte for byte
    assert stmts[3] == (f'CREATE TRIGGER "{n.insert}" BEFORE INSERT ON "app"."users" FOR EACH ROW EXECUTE FUNCTION '
                        f'"app"."{n.function}"()')
    assert stmts[4].startswith(f'CREATE TRIGGER "{n.update}" BEFORE UPDATE ON "app"."users"')


def test_postgres_overwrite_and_dollar_tag() -> None:
    [*_, fn, _, _] = build_install_sql("postgresql", "t", ["id", "c"], [], {"c": "'$bf$' || id"}, None, True, "j")
    assert "$bf1$\n" in fn and fn.endswith("$bf1$")
    assert 'NEW."c" := bf_n0;' in fn and "OLD" not in fn
    assert "FROM (SELECT NEW.*) AS \"t\";" in fn  # no filter


def test_postgres_compares_json_as_text() -> None:
    fn = build_install_sql("postgresql", "t", {"id": "integer", "j": "json"}, [], {"j": "to_json(id)"}, None, False,
                           "j")[2]
    assert 'OLD."j"::text IS NOT DISTINCT FROM bf_o0::text' in fn


# ------------------------------------------------------------------------------------------ MySQL


def test_mysql_triggers_assign_new() -> None:
    stmts = build_install_sql("mysql", "users", USERS, ["id"], {"domain": "lower(substring_index(email, '@', -1))"},
                              "deleted = 0 AND email LIKE '%@%'", False, "dom")
    n = trigger_names("users", "dom")
    assert stmts[:2] == [f"DROP TRIGGER IF EXISTS `{n.insert}`", f"DROP TRIGGER IF EXISTS `{n.update}`"]
    ins, upd = stmts[2:]
    assert ins.startswith(f"CREATE TRIGGER `{n.insert}` BEFORE INSERT ON `users` FOR EACH ROW\nBEGIN\n")
    assert "IF (NEW.`deleted` = 0 AND NEW.`email` LIKE '%@%') THEN" in ins  # raw SQL: % is not doubled
    assert "SET NEW.`domain` = (lower(substring_index(NEW.`email`, '@', -1)));" in ins
    assert "OLD." not in ins
    # derived: target untouched, a source changed, and the target was OLD's expression (strings byte for byte)
    assert ("ELSEIF CAST(CONVERT(NEW.`domain` USING utf8mb4) AS BINARY) <=> CAST(CONVERT(OLD.`domain` USING utf8mb4) "
            "AS BINARY) AND NOT (CAST(CONVERT(NEW.`email` USING utf8mb4) AS BINARY) <=> "
            "CAST(CONVERT(OLD.`email` USING utf8mb4) AS BINARY)) AND CAST(CONVERT(OLD.`domain` USING utf8mb4) AS "
            "BINARY) <=> CAST(CONVERT((lower(substring_index(OLD.`email`, '@', -1))) USING utf8mb4) AS BINARY) "
            "THEN") in upd
    assert upd.endswith("END")


def test_mysql_numbers_compare_plainly_and_mariadb_replaces_atomically() -> None:
    stmts = build_install_sql("mysql", "db.t", {"id": "int", "n": "bigint(20)"}, [], {"n": "id * 2"}, None, False,
                              "j", mariadb=True)
    assert len(stmts) == 2 and all(s.startswith("CREATE OR REPLACE TRIGGER `db`.`bf_j_") for s in stmts)
    assert "ON `db`.`t` FOR EACH ROW" in stmts[0]
    # OLD's expression as the column would store it (Dialect.holds), as verify compares it
    assert ("NEW.`n` <=> OLD.`n` AND NOT (NEW.`id` <=> OLD.`id`) AND OLD.`n` <=> CAST((OLD.`id` * 2) AS SIGNED)"
            in stmts[1])


def test_mysql_constant_expression_has_nothing_to_follow() -> None:
    upd = build_install_sql("mysql", "t", {"id": "int", "c": "int"}, [], {"c": "42"}, None, False, "j")[3]
    assert "ELSEIF" not in upd and "SET NEW.`c` = (42);" in upd


def test_mysql_overwrite() -> None:
    ins = build_install_sql("mysql", "t", {"id": "int", "c": "int"}, [], {"c": "id + 1"}, None, True, "j")[2]
    assert ins.endswith("BEGIN\n  SET NEW.`c` = (NEW.`id` + 1);\nEND")


def test_mysql_accepts_table_info_columns() -> None:
    cols = {"id": Column("id", "int(11)", False), "s": Column("s", "varchar(10)", True)}
    upd = build_install_sql("mysql", "t", cols, [], {"s": "id"}, None, False, "j")[3]
    assert "CAST(CONVERT(OLD.`s` USING utf8mb4) AS BINARY)" in upd


# ------------------------------------------------------------------------------------------ SQLite


def test_sqlite_updates_the_row_by_its_key() -> None:
    stmts = build_install_sql("sqlite", "main.users", USERS, ["id"], {"domain": "lower(email)"}, "deleted = 0",
                              False, "dom")
    n = trigger_names("users", "dom")
    assert stmts[:2] == [f'DROP TRIGGER IF EXISTS "main"."{n.insert}"', f'DROP TRIGGER IF EXISTS "main"."{n.update}"']
    ins, upd = stmts[2:]
    # the trigger lives in the table's schema; statements inside name the table unqualified
    assert ins.startswith(f'CREATE TRIGGER "main"."{n.insert}" AFTER INSERT ON "users" FOR EACH ROW\n'
                          'WHEN NEW."domain" IS NULL\nBEGIN\n')
    assert 'UPDATE "users" SET "domain" = COALESCE("domain", (lower(email)))' in ins
    assert 'WHERE "id" = NEW."id" AND (deleted = 0)' in ins
    assert '("domain" IS NULL AND (lower(email)) IS NOT NULL)' in ins
    assert 'WHEN NEW."domain" IS NULL OR NEW."domain" IS OLD."domain" COLLATE BINARY' in upd
    assert ('(SELECT (lower(email)) FROM (SELECT OLD."id" AS "id", OLD."email" AS "email", ' in upd)
    # OLD's expression as storing it would convert it (Dialect.holds: unary + leaves the column's affinity to apply)
    assert '"domain" IS (+(SELECT (lower(email)) FROM (SELECT OLD."id" AS "id", ' in upd
    assert 'AS "users")) COLLATE BINARY' in upd


def test_sqlite_without_key_uses_rowid_and_overwrite() -> None:
    ins, upd = build_install_sql("sqlite", "t", ["a", "c"], [], {"c": "a + 1"}, None, True, "j")[2:]
    assert "WHERE rowid = NEW.rowid" in ins
    assert "WHEN" not in ins and '"c" IS NOT (a + 1) COLLATE BINARY' in upd


# ------------------------------------------------------------------------------------------ checks and removal


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_an_expression_over_a_target_is_refused(dialect: str) -> None:
    with pytest.raises(SchemaError, match="reads target column 'a'"):
        build_install_sql(dialect, "t", ["id", "a", "b"], ["id"], {"a": "id", "b": "upper(a)"}, None, False, "j")


def test_unknown_target_and_key_are_refused() -> None:
    with pytest.raises(SchemaError, match="target column 'nope'"):
        build_install_sql("sqlite", "t", ["id"], ["id"], {"nope": "id"}, None, False, "j")
    with pytest.raises(SchemaError, match="key column 'k'"):
        build_install_sql("sqlite", "t", ["id", "c"], ["k"], {"c": "id"}, None, False, "j")
    with pytest.raises(SchemaError, match="cannot read"):
        build_install_sql("postgresql", "t", ["id", "c"], [], {"c": "'x"}, None, False, "j")


def test_remove_sql() -> None:
    n = trigger_names("app.t", "j")
    assert build_remove_sql("postgresql", "app.t", "j") == [
        f'DROP TRIGGER IF EXISTS "{n.insert}" ON "app"."t"', f'DROP TRIGGER IF EXISTS "{n.update}" ON "app"."t"',
        f'DROP FUNCTION IF EXISTS "app"."{n.function}"()']
    assert build_remove_sql("postgresql", "app.t", "j", table_exists=False) == [
        f'DROP FUNCTION IF EXISTS "app"."{n.function}"()']
    assert build_remove_sql("mysql", "app.t", "j") == [f"DROP TRIGGER IF EXISTS `app`.`{n.insert}`",
                                                        f"DROP TRIGGER IF EXISTS `app`.`{n.update}`"]
    assert build_remove_sql("sqlite", "t", "j") == [f'DROP TRIGGER IF EXISTS "{n.insert}"',
                                                    f'DROP TRIGGER IF EXISTS "{n.update}"']


def test_mysql_double_dash_needs_a_space_and_comments_do_not_swallow_the_trigger() -> None:
    assert new("id--name") == "NEW.`id`--NEW.`name`"
    ins = build_install_sql("mysql", "t", {"id": "int", "c": "int"}, [], {"c": "id + 1 -- plus one"}, None, False,
                            "j")[2]
    assert "SET NEW.`c` = (NEW.`id` + 1);" in ins and "--" not in ins
    fn = build_install_sql("postgresql", "t", ["id", "c"], [], {"c": "id /* x */ + 1 -- y"}, None, False, "j")[2]
    assert "(id   + 1) INTO" in fn


# ------------------------------------------------------------------------------------------ lookup jobs

PL = {"pl_id": "bigint", "pl_namespace": "integer", "pl_title": "text", "pl_from": "integer",
      "pl_target_id": "bigint", "lt_title": "int"}   # lt_title: a job column named like a lookup column


def lookup_sql(dialect: str, table: str = "pagelinks", lookup_table: str = "linktarget",
               where: str | None = "pl_from <> 0", **kw: object) -> list[str]:
    """A linktarget-style lookup job's triggers, its spec as lookup.prepare builds it (qualified expressions)."""
    d = as_dialect(dialect)
    t = d.quote(split_table(table)[1])
    lk = LookupSpec(lookup_table, "lt_id", {"lt_namespace": f"{t}.{d.quote('pl_namespace')}",
                                             "lt_title": f"lower({t}.{d.quote('pl_title')}) /* c */"},
                    {"lt_first": f"{t}.{d.quote('pl_from')}"})
    return build_install_sql(dialect, table, PL, ["pl_id"], {"pl_target_id": lookup_expr(d, lk)}, where, False,
                             "pl", lookup=lk, **kw)  # type: ignore[arg-type]


def test_postgres_lookup_function_gets_or_creates() -> None:
    *_, fn, ins, upd = lookup_sql("postgresql")
    find = ('(SELECT bf_l."lt_id" FROM "linktarget" bf_l WHERE bf_l."lt_namespace" = ("pagelinks"."pl_namespace") '
            'AND bf_l."lt_title" = (lower("pagelinks"."pl_title")))')
    assert (f"SELECT true, {find}, ((\"pagelinks\".\"pl_namespace\") IS NOT NULL AND "
            "(lower(\"pagelinks\".\"pl_title\")) IS NOT NULL) INTO bf_match, bf_n0, bf_want "
            'FROM (SELECT NEW.*) AS "pagelinks" WHERE (pl_from <> 0);') in fn
    # insert only when the look-up found nothing, then look up again
    assert ("  IF bf_n0 IS NULL AND bf_want THEN\n"
            '    INSERT INTO "linktarget" ("lt_namespace", "lt_title", "lt_first") '
            'SELECT ("pagelinks"."pl_namespace"), (lower("pagelinks"."pl_title")), ("pagelinks"."pl_from") '
            'FROM (SELECT NEW.*) AS "pagelinks" '
            'ON CONFLICT ("lt_namespace", "lt_title") DO NOTHING;\n'
            f'    SELECT {find} INTO bf_n0 FROM (SELECT NEW.*) AS "pagelinks";\n'
            "  END IF;\n"
            '  NEW."pl_target_id" := bf_n0;') in fn
    # derived: OLD's target was the id of OLD's lookup row
    assert f'SELECT {find} INTO bf_o0 FROM (SELECT OLD.*) AS "pagelinks";' in fn
    assert ins.endswith('FOR EACH ROW WHEN (NEW."pl_target_id" IS NULL) EXECUTE FUNCTION "' +
                        trigger_names("pagelinks", "pl").function + '"()')
    # only a NULL target, or one left as it was while a match source changed, enters the function
    assert ('WHEN (NEW."pl_target_id" IS NULL OR (NEW."pl_target_id" IS NOT DISTINCT FROM OLD."pl_target_id" AND '
            '(NEW."pl_namespace" IS DISTINCT FROM OLD."pl_namespace" OR NEW."pl_title" COLLATE "C" IS DISTINCT FROM '
            'OLD."pl_title" COLLATE "C")))') in upd
    assert "pl_from IS DISTINCT" not in upd   # a values source does not move the row to another lookup row


def test_mysql_lookup_triggers_rewrite_the_qualified_expressions() -> None:
    drops_ins_upd = lookup_sql("mysql", table="db.pagelinks", lookup_table="db.linktarget")
    ins, upd = drops_ins_upd[2:]
    find = ("SELECT bf_l.`lt_id` FROM `db`.`linktarget` bf_l WHERE bf_l.`lt_namespace` = (NEW.`pl_namespace`) "
            "AND bf_l.`lt_title` = (lower(NEW.`pl_title`))")
    assert ins.startswith("CREATE TRIGGER `db`.`bf_pl_")
    assert ("IF (NEW.`pl_from` <> 0) THEN\n"
            "    IF NEW.`pl_target_id` IS NULL THEN\n"
            "      IF ((NEW.`pl_namespace`) IS NOT NULL AND (lower(NEW.`pl_title`)) IS NOT NULL) THEN\n"
            f"        SET NEW.`pl_target_id` = ({find});\n"
            "        IF NEW.`pl_target_id` IS NULL THEN\n"
            "          INSERT INTO `db`.`linktarget` (`lt_namespace`, `lt_title`, `lt_first`) VALUES "
            "((NEW.`pl_namespace`), (lower(NEW.`pl_title`)), (NEW.`pl_from`)) "
            "ON DUPLICATE KEY UPDATE `lt_id` = `lt_id`;\n"
            f"          SET NEW.`pl_target_id` = ({find} LOCK IN SHARE MODE);\n"
            "        END IF;\n"
            "      ELSE\n"
            "        SET NEW.`pl_target_id` = NULL;\n") in ins
    assert "OLD." not in ins
    # bf_l.lt_title is the lookup table's column, never the job's column of that name
    assert "NEW.`lt_title`" not in ins
    assert ("IF NEW.`pl_target_id` IS NULL OR (NEW.`pl_target_id` <=> OLD.`pl_target_id` AND NOT "
            "(NEW.`pl_namespace` <=> OLD.`pl_namespace` AND CAST(CONVERT(NEW.`pl_title` USING utf8mb4) AS BINARY) "
            "<=> CAST(CONVERT(OLD.`pl_title` USING utf8mb4) AS BINARY)) AND OLD.`pl_target_id` <=> "
            "CAST((SELECT bf_l.`lt_id` FROM `db`.`linktarget` bf_l WHERE bf_l.`lt_namespace` = (OLD.`pl_namespace`) "
            "AND bf_l.`lt_title` = (lower(OLD.`pl_title`))) AS SIGNED)) THEN") in upd
    assert all(s.startswith("CREATE OR REPLACE TRIGGER") for s in lookup_sql("mysql", mariadb=True))


def test_sqlite_lookup_triggers_insert_what_is_missing_then_update_the_row() -> None:
    ins, upd = lookup_sql("sqlite", table="main.pagelinks", lookup_table="linktarget", where=None)[2:]
    find = ('(SELECT bf_l."lt_id" FROM "linktarget" bf_l WHERE bf_l."lt_namespace" = ("pagelinks"."pl_namespace") '
            'AND bf_l."lt_title" = (lower("pagelinks"."pl_title")))')
    assert ins.startswith('CREATE TRIGGER "main"."bf_pl_')
    assert ('AFTER INSERT ON "pagelinks" FOR EACH ROW\nWHEN NEW."pl_target_id" IS NULL\nBEGIN\n'
            '  INSERT INTO "linktarget" ("lt_namespace", "lt_title", "lt_first")\n'
            '  SELECT ("pagelinks"."pl_namespace"), (lower("pagelinks"."pl_title")), ("pagelinks"."pl_from") '
            'FROM "pagelinks"\n  WHERE "pl_id" = NEW."pl_id" AND "pl_target_id" IS NULL AND') in ins
    assert f'AND NOT EXISTS ({find[1:-1]})\n  ON CONFLICT ("lt_namespace", "lt_title") DO NOTHING;' in ins
    assert (f'UPDATE "pagelinks" SET "pl_target_id" = {find}\n  WHERE "pl_id" = NEW."pl_id" AND '
            f'(("pl_target_id" IS NULL AND {find} IS NOT NULL));\nEND') in ins
    assert ('WHEN NEW."pl_target_id" IS NULL OR (NEW."pl_target_id" IS OLD."pl_target_id" COLLATE BINARY AND '
            '(NEW."pl_namespace" IS NOT OLD."pl_namespace" COLLATE BINARY OR NEW."pl_title" IS NOT '
            'OLD."pl_title" COLLATE BINARY))') in upd
    assert f'(SELECT {find} FROM (SELECT OLD."pl_id" AS "pl_id", ' in upd
    with pytest.raises(SchemaError, match="another schema"):
        lookup_sql("sqlite", table="main.pagelinks", lookup_table="other.linktarget")


@pytest.mark.parametrize("dialect", ["postgresql", "mysql", "sqlite"])
def test_lookup_triggers_are_checked(dialect: str) -> None:
    d = as_dialect(dialect)
    lk = LookupSpec("lt", "lt_id", {"lt_title": "pl_target_id + 1"})
    with pytest.raises(SchemaError, match=r"lookup.match.lt_title reads the target column 'pl_target_id'"):
        build_install_sql(dialect, "pagelinks", PL, ["pl_id"], {"pl_target_id": lookup_expr(d, lk)}, None, False,
                          "pl", lookup=lk)
    lk = LookupSpec("lt", "lt_id", {"lt_title": "pl_title"})
    with pytest.raises(SchemaError, match="need the table's columns"):
        build_install_sql(dialect, "pagelinks", [], [], {"pl_target_id": lookup_expr(d, lk)}, None, False, "pl",
                          lookup=lk)
