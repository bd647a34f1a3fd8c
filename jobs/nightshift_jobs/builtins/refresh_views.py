"""refresh-views: REFRESH MATERIALIZED VIEW, CONCURRENTLY whenever PostgreSQL allows it.

CONCURRENTLY keeps the view readable during the refresh but needs a plain unique index (all
columns, no WHERE) and an already populated view; otherwise a plain refresh is the only option.
"""

from __future__ import annotations

from psycopg import sql
from pydantic import Field

from nightshift_jobs import db
from nightshift_jobs.builtins._tables import split_name
from nightshift_jobs.params import DbParams
from nightshift_jobs.registry import job
from nightshift_jobs.runtime import ConfigError, Counts, JobContext

_VIEWS = """
SELECT n.nspname, c.relname, c.relispopulated,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
               AND i.indpred IS NULL AND i.indexprs IS NULL) AS has_unique
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'm'
"""


class RefreshViewsParams(DbParams):
    views: list[str] | None = Field(default=None, description="default: every materialized view")
    schemas: list[str] | None = None
    concurrently: bool = Field(default=True, description="use CONCURRENTLY where possible")


@job("refresh-views", params=RefreshViewsParams)
def run(ctx: JobContext, p: RefreshViewsParams) -> Counts:
    ctx.counts.update(views=0, views_refreshed=0, refreshed_concurrently=0)
    with db.connect(ctx, p, autocommit=True) as conn:
        found = {
            (str(r[0]), str(r[1])): (bool(r[2]), bool(r[3]))
            for r in conn.execute(_VIEWS).fetchall()
            if not p.schemas or r[0] in p.schemas
        }
        if p.views:
            targets: list[tuple[str, str]] = []
            for name in p.views:
                schema, view = split_name(name, None)
                matches = [k for k in found if k[1] == view and (schema is None or k[0] == schema)]
                if schema is None and len(matches) > 1:
                    matches = [k for k in matches if k[0] == "public"] or matches[:1]
                if not matches:
                    raise ConfigError(f"materialized view {name!r} does not exist")
                targets.append(matches[0])
        else:
            targets = sorted(found)
        ctx.counts["views"] = len(targets)
        for key in targets:
            ctx.checkpoint()
            populated, has_unique = found[key]
            concurrent = p.concurrently and populated and has_unique
            rel = sql.Identifier(*key)
            if ctx.dry_run:
                ctx.log("would refresh", step="refresh", view=".".join(key), concurrently=concurrent)
                continue
            stmt = "REFRESH MATERIALIZED VIEW CONCURRENTLY {}" if concurrent else "REFRESH MATERIALIZED VIEW {}"
            with ctx.step("refresh", view=".".join(key), concurrently=concurrent):
                conn.execute(sql.SQL(stmt).format(rel))
            ctx.add("views_refreshed")
            ctx.add("refreshed_concurrently", int(concurrent))
    ctx.message = (
        f"refreshed {ctx.counts['views_refreshed']} of {ctx.counts['views']} materialized views "
        f"({ctx.counts['refreshed_concurrently']} concurrently)"
    )
    return ctx.counts
