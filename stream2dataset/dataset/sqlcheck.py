"""What SQL text a user may give: one read-only statement (`sql`), one condition (`--where`).

The parser decides what a statement is; the sandbox (sandbox.py) is the second line of defence.
"""

from __future__ import annotations

import json
from typing import Collection

import duckdb

from ..errors import UserError

__all__ = ["check_query", "check_where", "one_line"]

_QUERY_TYPES = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}  # SELECT covers WITH, FROM,
# VALUES, DESCRIBE, SHOW and SUMMARIZE. PRAGMAs that only show things are allowed by name:
_SHOW_PRAGMAS = {"table_info", "show", "show_tables", "show_tables_expanded", "database_size", "version",
                 "platform", "functions", "collations"}
_READ_ONLY_HINT = "the sql command is read-only: use SELECT, WITH, FROM, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"


def one_line(err: Exception) -> str:
    """DuckDB's message without its `LINE 1: ... ^^^` context, on one line."""
    lines = []
    for line in str(err).splitlines():
        if line.startswith("LINE "):
            break
        lines.append(line.strip())
    return " ".join(x for x in lines if x)


def check_query(sql: str) -> str:
    """The single read-only statement in `sql`, or a UserError saying why it is refused."""
    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as err:
        raise UserError(f"SQL: {one_line(err)}") from None
    if len(statements) != 1:
        raise UserError("SQL: give exactly one statement" + (" (no `;` between several)" if statements else ""))
    st = statements[0]
    text = st.query.strip().rstrip(";").strip()
    if st.type == duckdb.StatementType.PRAGMA:
        name = text.split(None, 1)[1].split("(")[0].strip().lower() if " " in text else ""
        if name not in _SHOW_PRAGMAS:
            raise UserError(f"SQL: PRAGMA {name or '?'} is refused; {_READ_ONLY_HINT}")
    elif st.type not in _QUERY_TYPES:
        raise UserError(f"SQL: {st.type.name} statements are refused; {_READ_ONLY_HINT}")
    return text


# --where ------------------------------------------------------------------------------------------
# A condition is placed in `WHERE (...)`. The tokens show it cannot close that parenthesis (nor end
# the statement, nor hide the rest in a comment); DuckDB's parse tree then shows what it reads:
# no set operation, no table function (read_text, glob, query...), and in subqueries only the views.

_SAFE_NODES = {"SELECT_NODE", "BASE_TABLE", "SUBQUERY", "JOIN", "EXPRESSION_LIST", "EMPTY", "EMPTY_FROM"}
_REFUSED = {"SET_OPERATION_NODE": "UNION, EXCEPT and INTERSECT", "RECURSIVE_CTE_NODE": "WITH RECURSIVE",
            "CTE_NODE": "WITH", "TABLE_FUNCTION": "table functions (read_text, glob, query...)",
            "PIVOT": "PIVOT", "SHOW_REF": "DESCRIBE and SHOW"}


def _check_tokens(where: str, what: str) -> None:
    depth, tokens = 0, duckdb.tokenize(where)
    ends = [pos for pos, _ in tokens[1:]] + [len(where)]
    for (pos, kind), end in zip(tokens, ends):
        text = where[pos:end]
        if kind == duckdb.token_type.comment:
            raise UserError(f"{what}: comments are not allowed")
        if kind == duckdb.token_type.operator:
            if ";" in text:
                raise UserError(f"{what}: `;` is not allowed (give one condition)")
            for ch in text:
                depth += {"(": 1, ")": -1}.get(ch, 0)
                if depth < 0:
                    raise UserError(f"{what}: unbalanced `)`")
    if depth:
        raise UserError(f"{what}: unbalanced `(`")


def _parse_tree(sql: str, what: str) -> dict:
    with duckdb.connect() as con:
        tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    if tree.get("error"):
        raise UserError(f"{what}: {tree.get('error_message', 'not a condition')}")
    if len(tree["statements"]) != 1 or tree["statements"][0]["node"]["type"] != "SELECT_NODE":
        raise UserError(f"{what}: give one condition")
    return tree["statements"][0]["node"]


def _check_node(node, tables: Collection[str], what: str) -> None:
    """Refuse what a condition may not contain, anywhere in its parse tree."""
    if isinstance(node, list):
        for child in node:
            _check_node(child, tables, what)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if "class" not in node and isinstance(kind, str):  # a query node or a table reference
        if kind in _REFUSED or (kind.endswith("_NODE") and kind not in _SAFE_NODES):
            raise UserError(f"{what}: {_REFUSED.get(kind, kind)} not allowed (give one condition)")
        if kind == "BASE_TABLE":
            name = node["table_name"]
            if node["schema_name"] or node["catalog_name"] or name not in tables:
                may = f"subqueries may read {', '.join(sorted(tables))}" if tables else "subqueries are not allowed"
                raise UserError(f"{what}: {name!r} is not a table here ({may})")
    for child in node.values():
        _check_node(child, tables, what)


def check_where(where: str, tables: Collection[str], what: str = "--where") -> str:
    """`where` if it is exactly one condition, for `WHERE (...)`; else a one-line UserError naming
    `what`. Subqueries may read only `tables` (none: a snapshot's filter reads the frame alone)."""
    if not where.strip():
        raise UserError(f"{what}: give one condition, e.g. \"channel = 'x'\"")
    _check_tokens(where, what)
    select = _parse_tree(f"SELECT * FROM frames WHERE (\n{where}\n)", what)
    _check_node(select["where_clause"], tables, what)
    return where
