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

from convergio_server.config import load_settings
from convergio_server.domain.errors import DomainError
from convergio_server.domain.knowledge import KnowledgeBase

_HEADING = re.compile(r"^\s*#+\s+(?P<title>.+?)\s*$", re.MULTILINE)
_ID_CHARS = re.compile(r"[^A-Za-z0-9._:-]+")


def register(subparsers: Any) -> None:
    kb = subparsers.add_parser(
        "kb",
        help="manage a tenant's knowledge base",
        description="Add, list, search and delete documents of a tenant's knowledge base "
        "(PostgreSQL full-text search; agents search it with the search_knowledge_base tool). "
        "Talks to the database directly, like `convergio keys`.",
    )
    kb.add_argument("--config", type=Path, help="TOML settings file (or CONVERGIO_CONFIG_FILE)")
    kb.add_argument("--data-dir", type=Path, help="data directory (CONVERGIO_DATA_DIR)")
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
        description="Each file becomes one document; its id is the file name unless --id is "
        "given, its title the first Markdown heading or the file name.",
    )
    add.add_argument("files", nargs="+", type=Path, help="UTF-8 text files")
    add.add_argument("--id", dest="document_id", help="document id (one file only)")
    add.add_argument("--title", help="title (one file only)")
    add.add_argument("--source", help="where it comes from (default: the file path)")
    listing = actions.add_parser("list", help="list documents", parents=[common])
    listing.add_argument("--limit", type=int, default=100, help="most documents to show")
    search = actions.add_parser(
        "search", help="full-text search, best matches first", parents=[common]
    )
    search.add_argument("query", help="words to look for")
    search.add_argument("--limit", type=int, default=5, help="most results (1-50)")
    delete = actions.add_parser("delete", help="delete documents by id", parents=[common])
    delete.add_argument("document_ids", nargs="+", metavar="ID", help="ids shown by `kb list`")
    kb.set_defaults(handler=_kb)


def document_id_for(path: Path) -> str:
    return _ID_CHARS.sub("-", path.name).strip("-.")[:128] or "document"


def title_for(path: Path, content: str) -> str:
    heading = _HEADING.search(content[:4096])
    return heading["title"] if heading else path.name


async def _kb(args: argparse.Namespace) -> int:
    from convergio_server.infrastructure import StartupError, open_infrastructure
    from convergio_server.logs import configure_logging
    from convergio_server.storage.knowledge import PgKnowledgeStore

    settings = load_settings({"data_dir": args.data_dir}, args.config)
    configure_logging("WARNING")
    tenant = args.tenant or settings.dev_tenant
    if args.kb_command == "add" and len(args.files) > 1 and (args.document_id or args.title):
        print("convergio: --id and --title need exactly one file", file=sys.stderr)
        return 2
    try:
        infra = await open_infrastructure(settings)
    except StartupError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return 2
    try:
        kb = KnowledgeBase(PgKnowledgeStore(infra.pool))
        return await _run(args, kb, tenant)
    except DomainError as exc:
        print(f"convergio: {exc}", file=sys.stderr)
        return 1
    finally:
        await infra.close()


async def _run(args: argparse.Namespace, kb: KnowledgeBase, tenant: str) -> int:
    from convergio_server.cli import print_table

    if args.kb_command == "add":
        rows = []
        for path in args.files:
            try:
                content = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                print(f"convergio: cannot read {path}: {exc}", file=sys.stderr)
                return 1
            document = await kb.add(
                tenant,
                content=content,
                title=args.title or title_for(path, content),
                source=args.source or str(path),
                document_id=args.document_id or document_id_for(path),
            )
            rows.append(
                {"id": document.document_id, "title": document.title, "bytes": len(content)}
            )
        _print(args, rows, ["id", "title", "bytes"], print_table)
    elif args.kb_command == "list":
        documents = await kb.list_documents(tenant, limit=args.limit)
        rows = [
            {
                "id": d.document_id,
                "title": d.title,
                "source": d.source,
                "bytes": len(d.content.encode("utf-8")),
                "updated": d.update_time.isoformat(timespec="seconds") if d.update_time else "",
            }
            for d in documents
        ]
        _print(args, rows, ["id", "title", "source", "bytes", "updated"], print_table)
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
        for document_id in args.document_ids:
            await kb.delete(tenant, document_id)
            if not args.json:
                print(f"deleted {document_id}")
        if args.json:
            print(json.dumps({"deleted": args.document_ids}))
    return 0


def _print(
    args: argparse.Namespace, rows: list[dict[str, Any]], columns: list[str], table: Any
) -> None:
    if args.json:
        print(json.dumps(rows))
    else:
        table(rows, columns)
