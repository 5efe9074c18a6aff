"""services.xml and query-profile parsing for the embedded engine (spec §7).

The engine serves a package only if it understands every construct in it, so
these parsers are allow-lists: any element or attribute they do not know makes
`load_services` / `load_query_profile` raise `PackageError` naming the file and
line, and the engine refuses to start (spec §1).
"""

from __future__ import annotations

import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

QUERY_PROFILE_FIELDS = ("maxHits", "maxOffset", "hits", "timeout", "ranking.profile")


class PackageError(Exception):
    """A package construct the engine cannot serve; str() is Vespa-style `file:line: ...`."""

    def __init__(self, file: Path | str, line: int, construct: str) -> None:
        self.file = str(file)
        self.line = line
        self.construct = construct
        super().__init__(f"{self.file}:{line}: unsupported construct '{construct}'")


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    text: str = ""


def _parse_xml(path: Path) -> _Node:
    """Parse an XML file into a small tree that remembers line numbers (ElementTree does not)."""
    parser = xml.parsers.expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, dict(attrs), parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    try:
        parser.Parse(path.read_bytes(), True)
    except xml.parsers.expat.ExpatError as e:
        raise PackageError(
            path, e.lineno, f"malformed XML: {xml.parsers.expat.errors.messages[e.code]}"
        ) from e
    return root[0]


@dataclass(frozen=True)
class ContentCluster:
    id: str
    document_types: tuple[str, ...]
    line: int
    document_lines: tuple[int, ...] = ()  # line of each <document> element


@dataclass(frozen=True)
class Services:
    """What the engine needs from services.xml."""

    path: Path
    container_id: str
    search: bool
    document_api: bool
    ignore_undefined_fields: bool
    content_clusters: tuple[ContentCluster, ...]

    @property
    def document_types(self) -> dict[str, str]:
        """Document type -> content cluster id."""
        return {t: c.id for c in self.content_clusters for t in c.document_types}


def _check_attrs(path: Path, node: _Node, allowed: set[str]) -> None:
    for name in node.attrs:
        if name not in allowed and not name.startswith("xmlns"):
            raise PackageError(path, node.line, f"<{node.tag} {name}=...>")


def _parse_container(path: Path, node: _Node) -> tuple[str, bool, bool, bool]:
    _check_attrs(path, node, {"id", "version"})
    search = document_api = ignore_undefined = False
    for child in node.children:
        if child.tag == "search":
            _check_attrs(path, child, set())
            if child.children:
                raise PackageError(
                    path, child.children[0].line, f"<search><{child.children[0].tag}>"
                )
            search = True
        elif child.tag == "document-api":
            _check_attrs(path, child, set())
            document_api = True
            for opt in child.children:
                if opt.tag != "ignore-undefined-fields" or opt.children:
                    raise PackageError(path, opt.line, f"<document-api><{opt.tag}>")
                value = opt.text.strip()
                if value not in ("true", "false"):
                    raise PackageError(path, opt.line, f"<ignore-undefined-fields>{value}")
                ignore_undefined = value == "true"
        elif child.tag == "nodes":
            pass  # deployment sizing only
        else:
            raise PackageError(path, child.line, child.tag)
    return node.attrs.get("id", "default"), search, document_api, ignore_undefined


def _parse_content(path: Path, node: _Node) -> ContentCluster:
    _check_attrs(path, node, {"id", "version"})
    cluster_id = node.attrs.get("id", "content")
    types: list[str] = []
    lines: list[int] = []
    for child in node.children:
        if child.tag in ("redundancy", "min-redundancy", "nodes"):
            continue  # replication and sizing: no effect on one local node
        if child.tag != "documents":
            raise PackageError(path, child.line, child.tag)
        _check_attrs(path, child, set())
        for doc in child.children:
            if doc.tag != "document":
                raise PackageError(path, doc.line, doc.tag)
            _check_attrs(path, doc, {"type", "mode"})
            mode = doc.attrs.get("mode", "index")
            if mode != "index":
                raise PackageError(path, doc.line, f'mode="{mode}"')
            if doc.children:
                raise PackageError(path, doc.children[0].line, doc.children[0].tag)
            if "type" not in doc.attrs:
                raise PackageError(path, doc.line, "<document> without type")
            types.append(doc.attrs["type"])
            lines.append(doc.line)
    return ContentCluster(cluster_id, tuple(types), node.line, tuple(lines))


def load_services(package_dir: Path) -> Services:
    """Parse `package_dir/services.xml`; raise PackageError on anything outside the subset."""
    path = Path(package_dir) / "services.xml"
    if not path.is_file():
        raise PackageError(path, 0, "missing services.xml")
    root = _parse_xml(path)
    if root.tag != "services":
        raise PackageError(path, root.line, root.tag)
    _check_attrs(path, root, {"version", "minimum-required-vespa-version"})
    containers: list[tuple[str, bool, bool, bool]] = []
    clusters: list[ContentCluster] = []
    for child in root.children:
        if child.tag == "container":
            if containers:
                raise PackageError(path, child.line, "second <container> cluster")
            containers.append(_parse_container(path, child))
        elif child.tag == "content":
            clusters.append(_parse_content(path, child))
        else:
            raise PackageError(path, child.line, child.tag)
    if not containers:
        raise PackageError(path, root.line, "services.xml without <container>")
    seen: dict[str, str] = {}
    for cluster in clusters:
        for doc_type in cluster.document_types:
            if doc_type in seen:
                raise PackageError(
                    path, cluster.line, f"document type '{doc_type}' in two content clusters"
                )
            seen[doc_type] = cluster.id
    container_id, search, document_api, ignore_undefined = containers[0]
    return Services(path, container_id, search, document_api, ignore_undefined, tuple(clusters))


def load_query_profile(package_dir: Path) -> dict[str, str]:
    """Parse `search/query-profiles/default.xml` into {name: value}; absent file -> {}."""
    folder = Path(package_dir) / "search" / "query-profiles"
    if not folder.exists():
        return {}
    for extra in sorted(folder.iterdir()):
        if extra.name != "default.xml":
            raise PackageError(extra, 0, f"query profile file '{extra.name}'")
    path = folder / "default.xml"
    if not path.is_file():
        return {}
    root = _parse_xml(path)
    if root.tag != "query-profile":
        raise PackageError(path, root.line, root.tag)
    _check_attrs(path, root, {"id"})
    if root.attrs.get("id") != "default":
        raise PackageError(path, root.line, f"query-profile id '{root.attrs.get('id')}'")
    values: dict[str, str] = {}
    for child in root.children:
        if child.tag != "field":
            raise PackageError(path, child.line, child.tag)
        _check_attrs(path, child, {"name"})
        name = child.attrs.get("name", "")
        if name not in QUERY_PROFILE_FIELDS:
            raise PackageError(path, child.line, f"query profile field '{name}'")
        if child.children:
            raise PackageError(path, child.children[0].line, child.children[0].tag)
        values[name] = child.text.strip()
    return values
