"""`llmops rag ingest|query|eval|tune`: thin wrappers over `ws.rag`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from llmops.cli import app, echo_json, workspace
from llmops.errors import AliasNotFound

rag_app = typer.Typer(no_args_is_help=True, help="Ingest corpora into versioned FAISS indexes; query, evaluate, tune.")
app.add_typer(rag_app, name="rag")


@rag_app.command("ingest")
def rag_ingest(spec: Path = typer.Argument(..., help="An ingestion spec, e.g. rag/handbook.yaml."),
               as_json: bool = typer.Option(False, "--json", help="Print a JSON summary (no progress bars).")):
    """Chunk, embed (cached) and index a corpus; publishes a new index version only if something changed."""
    result = workspace(create=True).rag.ingest(spec, progress=not as_json)
    if as_json:
        return echo_json(result.to_dict())
    if result.published:
        head = f"published {result.ref}"
    else:
        by = result.published_by
        head = f"unchanged, nothing published: {result.ref} (published by run {str(by.get('run_id'))[:12]}"
        head += f", pid {by['pid']})" if by.get("pid") else ")"
    typer.echo(f"{head}  {result.counts}  ({result.seconds:.1f} s, run {result.run_id[:12]})")
    for item in result.skipped:
        typer.echo(f"skipped {item['path']}: {item['reason']}", err=True)


@rag_app.command("query")
def rag_query(index: str = typer.Argument(..., help="NAME (latest version), NAME@VERSION or NAME@ALIAS"),
              query: str = typer.Argument(...),
              k: int = typer.Option(4, "-k", help="How many chunks (1 to 10000)."),
              as_json: bool = typer.Option(False, "--json")):
    """Search an index version; prints score, source and position of each chunk."""
    from llmops.rag.retrieval import check_k
    from llmops.store.refs import parse_ref

    check_k(k)
    ws = workspace()
    try:
        idx = ws.rag.index(index)
    except AliasNotFound as exc:
        ref = parse_ref(index, default_kind="index")
        raise AliasNotFound(f"{exc}: query `{ref.name}` for the latest version, or run "
                            f"`llmops assets alias {ref.base} {ref.selector} VERSION`") from None
    hits = idx.search(query, k=k)
    if as_json:
        return echo_json([h.to_dict() for h in hits])
    for h in hits:
        typer.echo(f"{h.score:.4f}  {h.source}#{h.seq}  {h.text[:100]!r}")


@rag_app.command("eval")
def rag_eval(index: str = typer.Argument(..., help="NAME[@VERSION|@ALIAS]"),
             queries: Path = typer.Option(..., "--queries", help="BEIR queries.jsonl"),
             qrels: Path = typer.Option(..., "--qrels", help="BEIR qrels.tsv"),
             as_json: bool = typer.Option(False, "--json")):
    """nDCG@10, recall@10, recall@100 and MRR@10 on a BEIR query set, logged as an eval run."""
    result = workspace().rag.eval(index, queries, qrels)
    if as_json:
        return echo_json(result.to_dict())
    typer.echo(f"{result.index} on {result.queries} queries (run {result.run_id[:12]})")
    for name, value in result.metrics.items():
        typer.echo(f"  {name:14} {value:.4f}")


@rag_app.command("tune")
def rag_tune(index: str = typer.Argument(..., help="NAME[@VERSION|@ALIAS] of an hnsw or ivf index"),
             target: float = typer.Option(0.95, help="recall@k against exact search to reach, in (0, 1]."),
             k: int = typer.Option(10, "-k", help="The k of recall@k (1 to 1000)."),
             sample: int = typer.Option(200, "--sample", help="Chunks to draw query spans from (at least 1)."),
             queries: Optional[Path] = typer.Option(None, "--queries", help="BEIR queries.jsonl (default: chunk spans)."),
             as_json: bool = typer.Option(False, "--json")):
    """Pick the smallest efSearch / nprobe reaching the recall target; records it in a new index version."""
    outcome = workspace().rag.tune(index, target=target, k=k, sample=sample, queries=queries)
    if as_json:
        return echo_json(outcome.to_dict())
    r = outcome.result
    what = "unchanged" if not outcome.published else "published"
    typer.echo(f"{outcome.tuned_from} -> {outcome.ref} ({what}): {r.param}={r.value} "
               f"recall@{r.k}={r.recall:.4f} (target {target})")
