"""`convergio kb`: manage a tenant's knowledge base (add files, list, search, delete).

The API has no knowledge-base RPC, so like `convergio keys` this talks to the database
directly (DATABASE_URL, or the embedded PostgreSQL under the data directory).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from convergio_server.commands import (
    EXIT_FAILED,
    EXIT_UNAVAILABLE,
    DatabaseUnavailable,
    add_store_args,
    int_range,
    open_database,
    print_table,
)
from convergio_server.config import load_settings
from convergio_server.domain.auth import validate_tenant_id
from convergio_server.domain.errors import DomainError, NotFound
from convergio_server.domain.knowledge import (
    MAX_LIST_PAGE,
    MAX_RESULTS,
    Document,
    KnowledgeBase,
    prepare_document,
)

_HEADING = re.compile(r"^\s*#+\s+(?P<title>.+?)\s*$", re.MULTILINE)
_ID_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


def _positive(text: str) -> int:
    if not re.fullmatch(r"[0-9]+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def register(subparsers: Any) -> None:
    kb = subparsers.add_parser(
        "kb",
        help="manage a tenant's knowledge base",
        description="Add, list, search and delete documents of a tenant's knowledge base "
        "(PostgreSQL full-text search; agents search it with the search_knowledge_base tool). "
        "Talks to PostgreSQL directly, like `convergio keys` (Redis is not needed). Exit 0 "
        "when done, 1 when refused (bad input, unknown tenant or document), 2 when PostgreSQL "
        "cannot be reached.",
    )
    add_store_args(kb)
    kb.add_argument("--tenant", help="tenant id (default: the development tenant)")
    kb.add_argument("--json", action="store_true", help="print JSON")
    # The same options after the action (`kb search X --tenant acme`); SUPPRESS keeps the
    # values given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--tenant", default=argparse.SUPPRESS, help="tenant id")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    actions = kb.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    add = actions.add_parser(
        "add",
        parents=[common],
        help="add text files (a file added again replaces its earlier version)",
        description="Each file becomes one document; its id is the file name (characters "
        "other than letters, digits, '.', '_', ':' and '-' become '-', and it starts with a "
        "letter or digit) unless --id is given, its title the first Markdown heading or the "
        "file name. All files are read and checked before any is added: one bad file adds "
        "none. Two files whose ids would be the same (d1/a.txt, d2/a.txt) are refused; add "
        "them one at a time with --id.",
    )
    add.add_argument("files", nargs="+", type=Path, help="UTF-8 text files")
    add.add_argument("--id", dest="document_id", help="document id (one file only)")
    add.add_argument("--title", help="title (one file only)")
    add.add_argument("--source", help="where it comes from (default: the file path)")
    listing = actions.add_parser(
        "list",
        help="list documents in id order",
        parents=[common],
        description="List documents in id order. When more than --limit are left, a note on "
        "stderr says so; continue with --after and the last id shown.",
    )
    listing.add_argument(
        "--limit", type=_positive, default=100, help="most documents to show (default 100)"
    )
    listing.add_argument("--after", default="", help="start after this document id")
    search = actions.add_parser(
        "search", help="full-text search, best matches first", parents=[common]
    )
    search.add_argument("query", help="words to look for")
    search.add_argument(
        "--limit",
        type=int_range(1, MAX_RESULTS),
        default=5,
        help=f"most results, 1-{MAX_RESULTS} (default 5)",
    )
    delete = actions.add_parser(
        "delete",
        help="delete documents by id",
        parents=[common],
        description="Delete each id given; an id not found is reported and the others are "
        "still deleted (exit 1 if any was not found). --json prints "
        '{"deleted": [...], "not_found": [...]}.',
    )
    delete.add_argument("document_ids", nargs="+", metavar="ID", help="ids shown by `kb list`")
    kb.set_defaults(handler=_kb)


def document_id_for(path: Path) -> str:
    """A valid document id made from any file name: other characters become '-', and the
    id starts with a letter or digit (`_notes.txt` is `notes.txt`)."""
    name = _ID_CHARS.sub("-", path.name)
    name = re.sub(r"^[^A-Za-z0-9]+", "", name)[:128].rstrip("-.")
    return name or "document"


def title_for(path: Path, content: str) -> str:
    heading = _HEADING.search(content[:4096])
    return heading["title"] if heading else path.name


async def _kb(args: argparse.Namespace) -> int:
    from convergio_server.logs import configure_logging
    from convergio_server.storage.knowledge import PgKnowledgeStore

    settings = load_settings({"data_dir": args.data_dir}, args.config)
    configure_logging("WARNING")
    tenant = args.tenant or settings.dev_tenant
    documents: list[Document] = []
    if args.kb_command == "add":
        if len(args.files) > 1 and (args.document_id or args.title):
            print("convergio: --id and --title need exactly one file", file=sys.stderr)
            return 2
        # Every file is read and checked before the database is opened: one bad file
        # adds none, rather than some of them.
        problems = _prepare(args, documents)
        if problems:
            for problem in problems:
                print(f"convergio: {problem}", file=sys.stderr)
            print("convergio: nothing was added", file=sys.stderr)
            return EXIT_FAILED
    try:
        async with open_database(settings) as (pool, _):
            await _check_tenant(pool, tenant)
            kb = KnowledgeBase(PgKnowledgeStore(pool))
            return await _run(args, kb, tenant, documents)
    except DatabaseUnavailable as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except DomainError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return EXIT_FAILED


async def _check_tenant(pool: Any, tenant: str) -> None:
    """NotFound for a tenant that does not exist: otherwise `list` and `search` would show
    an empty knowledge base and `delete` blame the documents, for a mistyped --tenant."""
    from convergio_server.storage.keys import PgKeyStore

    if not await PgKeyStore(pool).tenant_exists(validate_tenant_id(tenant)):
        raise NotFound(f"tenant {tenant!r} does not exist")


def _prepare(args: argparse.Namespace, documents: list[Document]) -> list[str]:
    """Fill `documents` from the files of `kb add`; the problems found, one per file."""
    problems: list[str] = []
    paths_by_id: dict[str, Path] = {}
    for path in args.files:
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"cannot read {path}: {exc}")
            continue
        document_id = args.document_id or document_id_for(path)
        if document_id in paths_by_id:
            problems.append(
                f"{paths_by_id[document_id]} and {path} would both be document "
                f"{document_id!r}; add them one at a time with --id"
            )
            continue
        paths_by_id[document_id] = path
        try:
            documents.append(
                prepare_document(
                    content=content,
                    title=args.title or title_for(path, content),
                    source=args.source or str(path),
                    document_id=document_id,
                )
            )
        except DomainError as exc:
            problems.append(f"{path}: {exc}")
    return problems


async def _run(
    args: argparse.Namespace, kb: KnowledgeBase, tenant: str, prepared: list[Document]
) -> int:

    if args.kb_command == "add":
        rows = []
        for document in prepared:
            stored = await kb.store(tenant, document)
            rows.append({"id": stored.document_id, "title": stored.title, "bytes": _size(stored)})
        _print(args, rows, ["id", "title", "bytes"], print_table)
    elif args.kb_command == "list":
        documents, more = await _list(kb, tenant, args.limit, args.after)
        rows = [
            {
                "id": d.document_id,
                "title": d.title,
                "source": d.source,
                "bytes": _size(d),
                "updated": d.update_time.isoformat(timespec="seconds") if d.update_time else "",
            }
            for d in documents
        ]
        _print(args, rows, ["id", "title", "source", "bytes", "updated"], print_table)
        if more:
            print(
                f"(more than {len(documents)}; raise --limit, or continue with "
                f"--after {documents[-1].document_id})",
                file=sys.stderr,
            )
    elif args.kb_command == "search":
        hits = await kb.search(tenant, args.query, limit=args.limit)
        rows = [
            {
                "id": h.document_id,
                "title": h.title,
                "score": round(h.score, 4),
                "snippet": h.snippet,
            }
            for h in hits
        ]
        _print(args, rows, ["id", "title", "score", "snippet"], print_table)
    else:
        deleted: list[str] = []
        not_found: list[str] = []
        for document_id in args.document_ids:
            try:
                await kb.delete(tenant, document_id)
            except NotFound as exc:
                not_found.append(document_id)
                print(f"convergio: {exc}", file=sys.stderr)
                continue
            deleted.append(document_id)
            if not args.json:
                print(f"deleted {document_id}")
        if args.json:
            print(json.dumps({"deleted": deleted, "not_found": not_found}))
        return EXIT_FAILED if not_found else 0
    return 0


async def _list(
    kb: KnowledgeBase, tenant: str, limit: int, after: str
) -> tuple[list[Document], bool]:
    """Up to `limit` documents after `after`, page by page, and whether more are left."""
    found: list[Document] = []
    while True:
        # One more than wanted, to know whether any are left.
        want = min(MAX_LIST_PAGE, limit + 1 - len(found))
        page = await kb.list_documents(tenant, limit=want, after_id=after)
        found += page
        if len(page) < want or len(found) > limit:
            break
        after = page[-1].document_id
    return found[:limit], len(found) > limit


def _size(document: Document) -> int:
    return len(document.content.encode("utf-8"))


def _print(
    args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str], table: Any
) -> None:
    if args.json:
        print(json.dumps(rows))
    else:
        table(rows, columns)
