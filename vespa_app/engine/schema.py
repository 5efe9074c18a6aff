"""Parser for the subset of Vespa's schema language (.sd) that the embedded engine serves.

Spec: /work/shared/docs/vespa-subset.md §7 (docs.vespa.ai/en/reference/schemas/schemas.html).
Anything outside the subset raises `PackageError`, whose text is `<file>:<line>: unsupported
construct '<construct>'`: the engine never serves a package it only partly understands.
Rank profiles come back with inheritance resolved, so the search side never walks parents.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

CELL_TYPES = ("float", "double", "bfloat16", "int8")
PRIMITIVE_KINDS = ("string", "int", "long", "float", "double", "bool")
DISTANCE_METRICS = ("euclidean", "angular", "prenormalized-angular", "dotproduct", "hamming")
MATCH_MODES = ("text", "word", "exact", "cased")
DEFAULT_KEEP_RANK_COUNT = 10000


class PackageError(Exception):
    """A package file the engine refuses to serve; str() is `<file>:<line>: <problem>`."""

    def __init__(self, file: str | Path, line: int, construct: str, problem: str | None = None):
        self.file = str(file)
        self.line = line
        self.construct = construct
        self.problem = problem or f"unsupported construct '{construct}'"
        super().__init__(f"{self.file}:{line}: {self.problem}")


# ---------------------------------------------------------------------------------------------
# Types


@dataclass(frozen=True)
class TensorDim:
    name: str
    size: int | None  # None = mapped dimension

    @property
    def spec(self) -> str:
        return f"{self.name}{{}}" if self.size is None else f"{self.name}[{self.size}]"


@dataclass(frozen=True)
class TensorType:
    cell_type: str
    dims: tuple[TensorDim, ...]  # sorted by name, as Vespa normalises types

    @property
    def spec(self) -> str:
        cells = "" if self.cell_type == "double" else f"<{self.cell_type}>"
        return f"tensor{cells}({','.join(d.spec for d in self.dims)})"

    @property
    def is_dense(self) -> bool:
        return all(d.size is not None for d in self.dims)

    @property
    def is_mapped(self) -> bool:
        return bool(self.dims) and all(d.size is None for d in self.dims)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(d.size or 0 for d in self.dims)

    def dim(self, name: str) -> TensorDim | None:
        return next((d for d in self.dims if d.name == name), None)


@dataclass(frozen=True)
class FieldType:
    kind: str  # string int long float double bool array tensor
    element: FieldType | None = None
    tensor: TensorType | None = None

    @property
    def spec(self) -> str:
        if self.kind == "array":
            assert self.element is not None
            return f"array<{self.element.spec}>"
        if self.kind == "tensor":
            assert self.tensor is not None
            return self.tensor.spec
        return self.kind

    @property
    def is_numeric(self) -> bool:
        return self.kind in ("int", "long", "float", "double")


_TENSOR_RE = re.compile(r"^tensor\s*(?:<\s*(\w+)\s*>)?\s*\((.*)\)$", re.S)
_DIM_RE = re.compile(r"^([A-Za-z_]\w*)\s*(?:\[\s*(\d+)\s*\]|\{\s*\})$")


class TypeSyntaxError(ValueError):
    """A type text that is not in the subset; `construct` names the offending part."""

    def __init__(self, construct: str):
        super().__init__(construct)
        self.construct = construct


def parse_tensor_type(text: str) -> TensorType:
    """Parse `tensor<float>(x[128])`, `tensor(k{})`; dimensions come back sorted by name."""
    text = text.strip()
    m = _TENSOR_RE.match(text)
    if not m:
        raise TypeSyntaxError(text)
    cell_type = m.group(1) or "double"
    if cell_type not in CELL_TYPES:
        raise TypeSyntaxError(f"tensor<{cell_type}>")
    dims: list[TensorDim] = []
    body = m.group(2).strip()
    if body:
        for part in body.split(","):
            dm = _DIM_RE.match(part.strip())
            if not dm:
                raise TypeSyntaxError(text)
            dims.append(TensorDim(dm.group(1), int(dm.group(2)) if dm.group(2) else None))
    names = [d.name for d in dims]
    if len(set(names)) != len(names):
        raise TypeSyntaxError(text)
    return TensorType(cell_type, tuple(sorted(dims, key=lambda d: d.name)))


def parse_field_type(text: str) -> FieldType:
    """Parse a field type of the subset (§7); raises TypeSyntaxError naming what is outside it."""
    text = text.strip()
    if text in PRIMITIVE_KINDS:
        return FieldType(text)
    if text.startswith("array"):
        m = re.match(r"^array\s*<\s*(\w+)\s*>$", text)
        if not m or m.group(1) not in ("string", "int"):
            raise TypeSyntaxError(text)
        return FieldType("array", element=FieldType(m.group(1)))
    if text.startswith("tensor"):
        tt = parse_tensor_type(text)
        mixed = any(d.size is None for d in tt.dims) and any(d.size is not None for d in tt.dims)
        if mixed or not tt.dims:
            raise TypeSyntaxError(text)
        return FieldType("tensor", tensor=tt)
    raise TypeSyntaxError(re.split(r"[<(\s]", text, maxsplit=1)[0])


# ---------------------------------------------------------------------------------------------
# Schema model


@dataclass(frozen=True)
class HnswParams:
    max_links_per_node: int = 16
    neighbors_to_explore_at_insert: int = 200


@dataclass(frozen=True)
class Field:
    name: str
    type: FieldType
    indexing: tuple[str, ...]
    line: int
    match: str = "text"  # text (index fields) | word | exact | cased
    rank_filter: bool = False
    fast_search: bool = False
    paged: bool = False
    distance_metric: str = "euclidean"
    hnsw: HnswParams | None = None  # set when a tensor field has `index`
    enable_bm25: bool = False
    stemming: str | None = None

    @property
    def is_attribute(self) -> bool:
        return "attribute" in self.indexing

    @property
    def is_index(self) -> bool:
        return "index" in self.indexing

    @property
    def is_summary(self) -> bool:
        return "summary" in self.indexing

    @property
    def is_text_index(self) -> bool:
        """A string field searched lexically (§5.1), tokenized and scored with bm25."""
        return self.is_index and self.type.kind == "string"


@dataclass(frozen=True)
class Fieldset:
    name: str
    fields: tuple[str, ...]
    line: int


@dataclass(frozen=True)
class DocumentSummary:
    name: str
    fields: tuple[str, ...]  # inheritance resolved, declaration order
    line: int


@dataclass(frozen=True)
class Input:
    name: str  # the x of query(x)
    type: TensorType | None  # None = scalar (double)
    default: str | None  # literal text as written; parsed by the search side
    line: int


@dataclass(frozen=True)
class Constant:
    name: str
    type: TensorType | None
    value: str  # literal text (inline, or the contents of the `file:`)
    line: int


@dataclass(frozen=True)
class Function:
    name: str
    args: tuple[str, ...]
    expression: str
    line: int


@dataclass(frozen=True)
class OnnxModel:
    name: str
    file: str  # relative to the package
    path: Path
    inputs: tuple[tuple[str, str], ...]  # (model input name, source expression)
    outputs: tuple[tuple[str, str], ...]  # (model output name, alias)
    line: int


@dataclass(frozen=True)
class Phase:
    expression: str | None = None
    rerank_count: int | None = None
    rank_score_drop_limit: float | None = None
    keep_rank_count: int | None = None
    line: int = 0


@dataclass(frozen=True)
class RankProfile:
    """A rank profile with inheritance already resolved."""

    name: str
    line: int
    inherits: tuple[str, ...] = ()
    inputs: dict[str, Input] = field(default_factory=dict)
    constants: dict[str, Constant] = field(default_factory=dict)
    functions: dict[str, Function] = field(default_factory=dict)
    onnx_models: dict[str, OnnxModel] = field(default_factory=dict)
    first_phase: Phase = Phase()
    second_phase: Phase = Phase()
    global_phase: Phase = Phase()
    match_features: tuple[str, ...] = ()
    summary_features: tuple[str, ...] = ()
    rank_properties: dict[str, str] = field(default_factory=dict)
    approximate_threshold: float | None = None
    post_filter_threshold: float | None = None
    target_hits_max_adjustment_factor: float | None = None
    builtin: bool = False  # `unranked`, or `default` with nativeRank (not served)


@dataclass(frozen=True)
class Schema:
    name: str
    path: Path
    fields: dict[str, Field]
    rank_profiles: dict[str, RankProfile] = field(default_factory=dict)
    document_summaries: dict[str, DocumentSummary] = field(default_factory=dict)
    fieldsets: dict[str, Fieldset] = field(default_factory=dict)
    onnx_models: dict[str, OnnxModel] = field(default_factory=dict)
    constants: dict[str, Constant] = field(default_factory=dict)

    @property
    def summary_fields(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields.values() if f.is_summary)


# ---------------------------------------------------------------------------------------------
# Scanner


class _Scanner:
    """Character-level reader over an .sd file that tracks line numbers and skips `#` comments."""

    WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*")

    def __init__(self, text: str, path: Path):
        self.text = text
        self.pos = 0
        self.path = path

    @property
    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def fail(self, construct: str, line: int | None = None) -> PackageError:
        return PackageError(self.path, line or self.line, construct)

    def syntax(self, problem: str, line: int | None = None) -> PackageError:
        return PackageError(self.path, line or self.line, problem, f"syntax error: {problem}")

    def skip_ws(self, newlines: bool = True) -> None:
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "#":
                nl = self.text.find("\n", self.pos)
                self.pos = len(self.text) if nl < 0 else nl
            elif c == "\n" and not newlines:
                return
            elif c.isspace():
                self.pos += 1
            else:
                return

    def at_end(self) -> bool:
        self.skip_ws()
        return self.pos >= len(self.text)

    def peek(self) -> str:
        self.skip_ws()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def accept(self, ch: str) -> bool:
        if self.peek() == ch:
            self.pos += 1
            return True
        return False

    def expect(self, ch: str) -> None:
        if not self.accept(ch):
            found = self.peek() or "end of file"
            raise self.syntax(f"expected '{ch}', found '{found}'")

    def word(self, what: str = "a name") -> str:
        self.skip_ws()
        m = self.WORD.match(self.text, self.pos)
        if not m:
            found = self.text[self.pos : self.pos + 10].split("\n")[0] or "end of file"
            raise self.syntax(f"expected {what}, found '{found}'")
        self.pos = m.end()
        return m.group(0)

    def peek_word(self) -> str | None:
        self.skip_ws()
        m = self.WORD.match(self.text, self.pos)
        return m.group(0) if m else None

    def until(self, stop: str) -> str:
        """Raw text up to (not including) the first char in `stop` outside brackets/quotes."""
        self.skip_ws(newlines=False)
        depth = 0
        start = self.pos
        quote = None
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if quote:
                if c == quote:
                    quote = None
            elif depth == 0 and c in stop:
                break
            elif c in "\"'":
                quote = c
            elif c in "([<":
                depth += 1
            elif c in ")]>":
                depth -= 1
            elif c == "{" and depth > 0:
                depth += 1
            elif c == "}" and depth > 0:
                depth -= 1
            self.pos += 1
        return self.text[start : self.pos].strip()

    def rest_of_line(self) -> str:
        """Text to the end of the line (comment removed); braces balanced across lines."""
        self.skip_ws(newlines=False)
        start = self.pos
        depth = 0
        quote = None
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if quote:
                if c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                if depth == 0:
                    break
                depth -= 1
            elif (c == "#" and depth == 0) or (c == "\n" and depth == 0):
                break
            self.pos += 1
        text = self.text[start : self.pos].strip()
        if self.pos < len(self.text) and self.text[self.pos] == "#":
            self.skip_ws(newlines=False)
        return text

    def block_text(self) -> str:
        """Raw text of a `{ ... }` block (the opening brace already consumed)."""
        start = self.pos
        depth = 1
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    body = self.text[start : self.pos]
                    self.pos += 1
                    return "\n".join(line.split("#", 1)[0] for line in body.splitlines()).strip()
            self.pos += 1
        raise self.syntax("unterminated '{'")

    def colon_or_block(self) -> str:
        """Value of `key: value` (to end of line) or `key { value }`."""
        if self.accept(":"):
            return self.rest_of_line()
        if self.accept("{"):
            return self.block_text()
        raise self.syntax("expected ':' or '{'")

    def skip_semicolon(self) -> None:
        self.skip_ws(newlines=False)
        if self.pos < len(self.text) and self.text[self.pos] == ";":
            self.pos += 1


def _int(sc: _Scanner, text: str, line: int) -> int:
    try:
        return int(text)
    except ValueError:
        raise sc.syntax(f"expected an integer, found '{text}'", line) from None


def _float(sc: _Scanner, text: str, line: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise sc.syntax(f"expected a number, found '{text}'", line) from None


# ---------------------------------------------------------------------------------------------
# Parser


@dataclass
class _RawProfile:
    name: str
    line: int
    inherits: list[str]
    items: dict = field(default_factory=dict)  # setting name -> value, only those written


class _SchemaParser:
    def __init__(self, path: Path, package_dir: Path):
        self.path = path
        self.package_dir = package_dir
        self.sc = _Scanner(path.read_text(encoding="utf-8"), path)
        self.fields: dict[str, Field] = {}
        self.fieldsets: dict[str, Fieldset] = {}
        self.raw_summaries: dict[str, tuple[list[str], list[str], int]] = {}
        self.raw_profiles: dict[str, _RawProfile] = {}
        self.onnx_models: dict[str, OnnxModel] = {}
        self.constants: dict[str, Constant] = {}

    def parse(self) -> Schema:
        sc = self.sc
        kw = sc.word("'schema'")
        if kw not in ("schema", "search"):
            raise sc.fail(kw)
        line = sc.line
        name = sc.word("a schema name")
        if name != self.path.stem:
            raise PackageError(
                self.path, line, name, f"schema '{name}' must be in a file named {name}.sd"
            )
        if sc.peek_word() == "inherits":
            raise sc.fail("inherits")
        sc.expect("{")
        seen_document = False
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("a schema item")
            if kw == "document":
                doc = sc.word("a document name")
                if doc != name:
                    raise PackageError(
                        self.path, kw_line, doc, "document name must equal schema name"
                    )
                if sc.peek_word() == "inherits":
                    raise sc.fail("document inherits")
                sc.expect("{")
                self._document_body()
                seen_document = True
            elif kw == "fieldset":
                self._fieldset(kw_line)
            elif kw == "document-summary":
                self._document_summary(kw_line)
            elif kw == "rank-profile":
                self._rank_profile(kw_line)
            elif kw == "onnx-model":
                model = self._onnx_model(kw_line)
                self.onnx_models[model.name] = model
            elif kw == "constant":
                self._schema_constant(kw_line)
            else:
                raise sc.fail(kw, kw_line)
        if not sc.at_end():
            raise sc.syntax("text after the closing '}' of the schema")
        if not seen_document:
            raise PackageError(self.path, 1, "schema", "schema has no document block")
        return self._build(name)

    # -- document --------------------------------------------------------------------------

    def _document_body(self) -> None:
        sc = self.sc
        while not sc.accept("}"):
            line = sc.line
            kw = sc.word("'field'")
            if kw != "field":
                raise sc.fail(kw, line)
            self._field(line)

    def _field(self, line: int) -> None:
        sc = self.sc
        name = sc.word("a field name")
        if sc.word("'type'") != "type":
            raise sc.syntax("expected 'type'", line)
        type_text = sc.until("{\n")
        try:
            ftype = parse_field_type(type_text)
        except TypeSyntaxError as e:
            raise sc.fail(e.construct, line) from None
        if name in self.fields:
            raise PackageError(self.path, line, name, f"field '{name}' is declared twice")
        sc.expect("{")
        opts: dict = {"indexing": ()}
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("a field setting")
            if kw == "indexing":
                opts["indexing"] = self._indexing(sc.colon_or_block(), kw_line)
            elif kw == "attribute":
                self._attribute_settings(sc.colon_or_block(), kw_line, opts)
            elif kw == "rank":
                value = sc.colon_or_block()
                if value != "filter":
                    raise sc.fail(f"rank: {value}", kw_line)
                opts["rank_filter"] = True
            elif kw == "match":
                value = sc.colon_or_block()
                if value not in MATCH_MODES:
                    raise sc.fail(f"match: {value}", kw_line)
                opts["match"] = value
            elif kw == "index":
                self._index_settings(kw_line, opts)
            elif kw == "stemming":
                value = sc.colon_or_block()
                if value != "none":
                    raise sc.fail(f"stemming: {value}", kw_line)
                opts["stemming"] = value
            else:
                raise sc.fail(kw, kw_line)
            sc.skip_semicolon()
        self.fields[name] = self._check_field(name, ftype, line, opts)

    def _indexing(self, text: str, line: int) -> tuple[str, ...]:
        parts = tuple(p.strip() for p in text.replace("\n", " ").split("|"))
        for p in parts:
            if p not in ("summary", "attribute", "index"):
                raise self.sc.fail(p or "indexing", line)
        return parts

    def _attribute_settings(self, text: str, line: int, opts: dict) -> None:
        for raw in re.split(r"[\n;]", text):
            item = raw.strip()
            if not item:
                continue
            if item in ("fast-search", "paged"):
                opts[item.replace("-", "_")] = True
            elif item.startswith("distance-metric"):
                metric = item.split(":", 1)[1].strip() if ":" in item else ""
                if metric not in DISTANCE_METRICS:
                    raise self.sc.fail(f"distance-metric: {metric}", line)
                opts["distance_metric"] = metric
            else:
                raise self.sc.fail(f"attribute: {item}", line)

    def _index_settings(self, line: int, opts: dict) -> None:
        sc = self.sc
        if sc.accept(":"):
            value = sc.rest_of_line()
            if value != "enable-bm25":
                raise sc.fail(f"index: {value}", line)
            opts["enable_bm25"] = True
            return
        sc.expect("{")
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("an index setting")
            if kw == "enable-bm25":
                opts["enable_bm25"] = True
            elif kw == "hnsw":
                params: dict[str, int] = {}
                if sc.accept("{"):
                    while not sc.accept("}"):
                        p_line = sc.line
                        key = sc.word("an hnsw setting")
                        sc.expect(":")
                        value = sc.rest_of_line()
                        if key not in ("max-links-per-node", "neighbors-to-explore-at-insert"):
                            raise sc.fail(f"hnsw {key}", p_line)
                        params[key.replace("-", "_")] = _int(sc, value, p_line)
                        sc.skip_semicolon()
                opts["hnsw"] = HnswParams(**params)
            else:
                raise sc.fail(f"index {kw}", kw_line)
            sc.skip_semicolon()

    def _check_field(self, name: str, ftype: FieldType, line: int, opts: dict) -> Field:
        indexing = opts.pop("indexing")
        if not indexing:
            raise PackageError(self.path, line, name, f"field '{name}' has no indexing statement")
        is_index = "index" in indexing
        hnsw = opts.pop("hnsw", None)
        if ftype.kind == "tensor":
            tt = ftype.tensor
            assert tt is not None
            if is_index:
                if "attribute" not in indexing:
                    raise self.sc.fail("index without attribute on a tensor", line)
                if len(tt.dims) != 1 or tt.dims[0].size is None:
                    raise self.sc.fail(f"hnsw index on {tt.spec}", line)
                if tt.cell_type == "int8":
                    raise self.sc.fail("hnsw index on int8 cells", line)
                hnsw = hnsw or HnswParams()
            metric = opts.get("distance_metric", "euclidean")
            if metric == "hamming" and tt.cell_type != "int8":
                raise self.sc.fail(f"distance-metric: hamming on {tt.cell_type} cells", line)
            if metric != "hamming" and tt.cell_type == "int8":
                raise self.sc.fail(f"distance-metric: {metric} on int8 cells", line)
            if opts.get("match") or opts.get("stemming") or opts.get("enable_bm25"):
                raise self.sc.fail("text settings on a tensor field", line)
        else:
            if hnsw is not None:
                raise self.sc.fail("hnsw on a non-tensor field", line)
            if "distance_metric" in opts:
                raise self.sc.fail("distance-metric on a non-tensor field", line)
        base = ftype.element.kind if ftype.kind == "array" else ftype.kind
        if is_index and ftype.kind != "tensor":
            if base != "string" or ftype.kind == "array":
                raise self.sc.fail(f"index on {ftype.spec}", line)
            if opts.get("stemming") != "none":
                raise self.sc.fail("stemming (default 'best'; write 'stemming: none')", line)
            if opts.get("match", "text") != "text":
                raise self.sc.fail(f"match: {opts['match']} on an index field", line)
        elif "match" in opts and base != "string":
            raise self.sc.fail(f"match on {ftype.spec}", line)
        if base == "string" and not is_index:
            opts.setdefault("match", "word")
        return Field(name=name, type=ftype, indexing=indexing, line=line, hnsw=hnsw, **opts)

    # -- fieldsets and summaries --------------------------------------------------------------

    def _fieldset(self, line: int) -> None:
        sc = self.sc
        name = sc.word("a fieldset name")
        sc.expect("{")
        names: tuple[str, ...] = ()
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("'fields'")
            if kw != "fields":
                raise sc.fail(f"fieldset {kw}", kw_line)
            sc.expect(":")
            names = tuple(n.strip() for n in sc.rest_of_line().split(",") if n.strip())
        self.fieldsets[name] = Fieldset(name, names, line)

    def _document_summary(self, line: int) -> None:
        sc = self.sc
        name = sc.word("a document-summary name")
        parents: list[str] = []
        if sc.peek_word() == "inherits":
            sc.word()
            parents.append(sc.word("a document-summary name"))
        sc.expect("{")
        names: list[str] = []
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("'summary'")
            if kw == "from-disk":
                continue
            if kw != "summary":
                raise sc.fail(f"document-summary {kw}", kw_line)
            fname = sc.word("a summary field name")
            if sc.peek_word() == "type":
                sc.word()
                sc.until("{")
            sc.expect("{")
            body = sc.block_text()
            if body:
                raise sc.fail(f"summary {fname} {{ {body.splitlines()[0]} }}", kw_line)
            names.append(fname)
        self.raw_summaries[name] = (names, parents, line)

    # -- onnx models, constants ----------------------------------------------------------------

    def _onnx_model(self, line: int) -> OnnxModel:
        sc = self.sc
        name = sc.word("an onnx-model name")
        sc.expect("{")
        file = None
        inputs: list[tuple[str, str]] = []
        outputs: list[tuple[str, str]] = []
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("an onnx-model setting")
            if kw == "file":
                sc.expect(":")
                file = sc.rest_of_line()
            elif kw in ("input", "output"):
                key = sc.until(":").strip().strip('"')
                sc.expect(":")
                value = sc.rest_of_line()
                (inputs if kw == "input" else outputs).append((key, value))
            elif kw in ("gpu-device", "intraop-threads", "interop-threads", "execution-mode"):
                sc.expect(":")
                sc.rest_of_line()
            else:
                raise sc.fail(f"onnx-model {kw}", kw_line)
        if not file:
            raise PackageError(self.path, line, name, f"onnx-model '{name}' has no file")
        path = (self.package_dir / file).resolve()
        if not path.is_file():
            raise PackageError(self.path, line, file, f"onnx-model '{name}': no file '{file}'")
        return OnnxModel(name, file, path, tuple(inputs), tuple(outputs), line)

    def _schema_constant(self, line: int) -> None:
        sc = self.sc
        name = sc.word("a constant name")
        sc.expect("{")
        body = sc.block_text()
        settings = dict(
            (k.strip(), v.strip())
            for k, _, v in (ln.partition(":") for ln in body.splitlines() if ln.strip())
        )
        if set(settings) - {"file", "type"} or "file" not in settings or "type" not in settings:
            raise sc.fail(f"constant {name}", line)
        self.constants[name] = self._constant_from_file(
            name, settings["type"], settings["file"], line
        )

    def _constant_from_file(self, name: str, type_text: str, file: str, line: int) -> Constant:
        path = self.package_dir / file
        if not path.is_file() or path.suffix != ".json":
            raise PackageError(self.path, line, file, f"constant '{name}': no JSON file '{file}'")
        ctype = None if type_text == "double" else self._tensor_type(type_text, line)
        return Constant(name, ctype, path.read_text(encoding="utf-8"), line)

    def _tensor_type(self, text: str, line: int) -> TensorType:
        try:
            return parse_tensor_type(text)
        except TypeSyntaxError as e:
            raise self.sc.fail(e.construct, line) from None

    # -- rank profiles -------------------------------------------------------------------------

    def _rank_profile(self, line: int) -> None:
        sc = self.sc
        name = sc.word("a rank-profile name")
        inherits: list[str] = []
        if sc.peek_word() == "inherits":
            sc.word()
            inherits.append(sc.word("a rank-profile name"))
            while sc.accept(","):
                inherits.append(sc.word("a rank-profile name"))
        if name in self.raw_profiles:
            raise PackageError(self.path, line, name, f"rank-profile '{name}' is declared twice")
        raw = _RawProfile(name, line, inherits)
        sc.expect("{")
        items = raw.items
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("a rank-profile setting")
            if kw == "inputs":
                sc.expect("{")
                items.setdefault("inputs", {}).update(self._inputs())
            elif kw == "constants":
                sc.expect("{")
                items.setdefault("constants", {}).update(self._constants())
            elif kw == "function":
                fn = self._function(kw_line)
                items.setdefault("functions", {})[fn.name] = fn
            elif kw in ("first-phase", "second-phase", "global-phase"):
                items[kw] = self._phase(kw, kw_line)
            elif kw in ("match-features", "summary-features"):
                text = sc.colon_or_block()
                items[kw] = self._feature_list(text)
            elif kw == "onnx-model":
                model = self._onnx_model(kw_line)
                items.setdefault("onnx", {})[model.name] = model
            elif kw == "rank-properties":
                sc.expect("{")
                items.setdefault("rank-properties", {}).update(self._rank_properties())
            elif kw in (
                "approximate-threshold",
                "post-filter-threshold",
                "target-hits-max-adjustment-factor",
            ):
                sc.expect(":")
                items[kw] = _float(sc, sc.rest_of_line(), kw_line)
            elif kw in (
                "num-threads-per-search",
                "filter-first-threshold",
                "filter-first-exploration",
            ):
                sc.expect(":")
                sc.rest_of_line()
            else:
                raise sc.fail(kw, kw_line)
            sc.skip_semicolon()
        self.raw_profiles[name] = raw

    def _inputs(self) -> dict[str, Input]:
        sc = self.sc
        out: dict[str, Input] = {}
        while not sc.accept("}"):
            line = sc.line
            text = sc.rest_of_line()
            m = re.match(r"^(?:query\(\s*(\w+)\s*\)|(\w+))\s*(.*)$", text, re.S)
            if not m:
                raise sc.syntax(f"bad input '{text}'", line)
            name = m.group(1) or m.group(2)
            rest = m.group(3).strip()
            type_text, default = rest, None
            colon = _top_level_colon(rest)
            if colon >= 0:
                type_text, default = rest[:colon].strip(), rest[colon + 1 :].strip()
            if type_text in ("", "double", "float"):
                itype = None
            elif type_text.startswith("tensor"):
                itype = self._tensor_type(type_text, line)
            else:
                raise sc.fail(f"input type {type_text}", line)
            out[name] = Input(name, itype, default, line)
        return out

    def _constants(self) -> dict[str, Constant]:
        sc = self.sc
        out: dict[str, Constant] = {}
        while not sc.accept("}"):
            line = sc.line
            text = sc.rest_of_line()
            m = re.match(r"^(?:constant\(\s*(\w+)\s*\)|(\w+))\s*(.*)$", text, re.S)
            if not m:
                raise sc.syntax(f"bad constant '{text}'", line)
            name = m.group(1) or m.group(2)
            rest = m.group(3).strip()
            colon = _top_level_colon(rest)
            if colon < 0:
                raise sc.syntax(f"constant '{name}' has no value", line)
            type_text, value = rest[:colon].strip() or "double", rest[colon + 1 :].strip()
            if value.startswith("file:"):
                out[name] = self._constant_from_file(name, type_text, value[5:].strip(), line)
                continue
            ctype = None if type_text in ("double", "float") else self._tensor_type(type_text, line)
            out[name] = Constant(name, ctype, value, line)
        return out

    def _function(self, line: int) -> Function:
        sc = self.sc
        name = sc.word("a function name")
        if name == "inline":
            name = sc.word("a function name")
        args: tuple[str, ...] = ()
        if sc.accept("("):
            arg_text = sc.until(")")
            sc.expect(")")
            args = tuple(a.strip() for a in arg_text.split(",") if a.strip())
        sc.expect("{")
        expression = None
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("'expression'")
            if kw != "expression":
                raise sc.fail(f"function {kw}", kw_line)
            expression = sc.colon_or_block()
        if not expression:
            raise PackageError(self.path, line, name, f"function '{name}' has no expression")
        return Function(name, args, expression, line)

    def _phase(self, kind: str, line: int) -> Phase:
        sc = self.sc
        sc.expect("{")
        values: dict = {"line": line}
        while not sc.accept("}"):
            kw_line = sc.line
            kw = sc.word("a phase setting")
            if kw == "expression":
                values["expression"] = sc.colon_or_block()
            elif kw == "rerank-count" and kind != "first-phase":
                sc.expect(":")
                values["rerank_count"] = _int(sc, sc.rest_of_line(), kw_line)
            elif kw == "keep-rank-count" and kind == "first-phase":
                sc.expect(":")
                values["keep_rank_count"] = _int(sc, sc.rest_of_line(), kw_line)
            elif kw == "rank-score-drop-limit":
                sc.expect(":")
                values["rank_score_drop_limit"] = _float(sc, sc.rest_of_line(), kw_line)
            else:
                raise sc.fail(f"{kind} {kw}", kw_line)
            sc.skip_semicolon()
        return Phase(**values)

    @staticmethod
    def _feature_list(text: str) -> tuple[str, ...]:
        """Split a feature list on whitespace outside parentheses; drop spaces inside features."""
        out: list[str] = []
        depth = 0
        cur = ""
        for c in text:
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            if c.isspace() and depth == 0:
                if cur:
                    out.append(cur)
                cur = ""
            elif not c.isspace():
                cur += c
        if cur:
            out.append(cur)
        return tuple(out)

    def _rank_properties(self) -> dict[str, str]:
        sc = self.sc
        out: dict[str, str] = {}
        while not sc.accept("}"):
            line = sc.line
            text = sc.rest_of_line()
            m = re.match(r"^(freshness\(\s*\w+\s*\)\.maxAge)\s*:\s*(\S+)$", text)
            if not m:
                raise sc.fail(f"rank-properties {text.split(':')[0].strip()}", line)
            _float(sc, m.group(2), line)
            out[m.group(1).replace(" ", "")] = m.group(2)
        return out

    # -- resolution ----------------------------------------------------------------------------

    def _build(self, name: str) -> Schema:
        for fs in self.fieldsets.values():
            for f in fs.fields:
                if f not in self.fields:
                    raise PackageError(
                        self.path, fs.line, f, f"fieldset '{fs.name}': no field '{f}'"
                    )
        summaries = self._resolve_summaries()
        profiles = self._resolve_profiles()
        return Schema(
            name=name,
            path=self.path,
            fields=dict(self.fields),
            rank_profiles=profiles,
            document_summaries=summaries,
            fieldsets=dict(self.fieldsets),
            onnx_models=dict(self.onnx_models),
            constants=dict(self.constants),
        )

    def _resolve_summaries(self) -> dict[str, DocumentSummary]:
        default_fields = tuple(f.name for f in self.fields.values() if f.is_summary)
        out: dict[str, DocumentSummary] = {"default": DocumentSummary("default", default_fields, 0)}

        def resolve(n: str, stack: tuple[str, ...]) -> DocumentSummary:
            if n in out:
                return out[n]
            names, parents, line = self.raw_summaries[n]
            fields: list[str] = []
            for p in parents:
                if p in stack or (p not in self.raw_summaries and p != "default"):
                    raise PackageError(
                        self.path, line, p, f"document-summary '{n}': bad inherits '{p}'"
                    )
                fields.extend(resolve(p, (*stack, n)).fields)
            for f in names:
                if f not in self.fields:
                    raise PackageError(
                        self.path, line, f, f"document-summary '{n}': no field '{f}'"
                    )
                if not self.fields[f].is_summary and not self.fields[f].is_attribute:
                    raise PackageError(
                        self.path, line, f, f"document-summary '{n}': field '{f}' has no summary"
                    )
                if f not in fields:
                    fields.append(f)
            out[n] = DocumentSummary(n, tuple(fields), line)
            return out[n]

        for n in self.raw_summaries:
            resolve(n, ())
        return out

    def _resolve_profiles(self) -> dict[str, RankProfile]:
        resolved: dict[str, RankProfile] = {}
        if "unranked" not in self.raw_profiles:
            resolved["unranked"] = RankProfile(
                "unranked", 0, first_phase=Phase(expression="0"), builtin=True
            )
        if "default" not in self.raw_profiles:
            resolved["default"] = RankProfile("default", 0, builtin=True)

        def resolve(n: str, stack: tuple[str, ...]) -> RankProfile:
            if n in resolved:
                return resolved[n]
            raw = self.raw_profiles[n]
            parents: list[RankProfile] = []
            for p in raw.inherits:
                if n == "default" and p == "default":
                    continue  # Vespa ignores it (DefaultRankProfile.inherit); a documented form
                if p in stack or (p not in self.raw_profiles and p not in resolved):
                    raise PackageError(
                        self.path, raw.line, p, f"rank-profile '{n}': bad inherits '{p}'"
                    )
                parents.append(resolve(p, (*stack, n)))
            resolved[n] = _merge_profile(raw, parents, self.onnx_models)
            return resolved[n]

        for n in self.raw_profiles:
            resolve(n, ())
        return resolved


def _top_level_colon(text: str) -> int:
    depth = 0
    for i, c in enumerate(text):
        if c in "([{<":
            depth += 1
        elif c in ")]}>":
            depth -= 1
        elif c == ":" and depth == 0:
            return i
    return -1


def _merge_phase(own: Phase | None, inherited: Phase) -> Phase:
    if own is None:
        return inherited
    return Phase(
        expression=own.expression if own.expression is not None else inherited.expression,
        rerank_count=own.rerank_count if own.rerank_count is not None else inherited.rerank_count,
        rank_score_drop_limit=(
            own.rank_score_drop_limit
            if own.rank_score_drop_limit is not None
            else inherited.rank_score_drop_limit
        ),
        keep_rank_count=(
            own.keep_rank_count if own.keep_rank_count is not None else inherited.keep_rank_count
        ),
        line=own.line,
    )


def _merge_profile(
    raw: _RawProfile, parents: list[RankProfile], schema_models: dict[str, OnnxModel]
) -> RankProfile:
    """Child settings override parents; with several parents the later one wins per key."""
    inputs: dict[str, Input] = {}
    constants: dict[str, Constant] = {}
    functions: dict[str, Function] = {}
    onnx: dict[str, OnnxModel] = dict(schema_models)
    rank_properties: dict[str, str] = {}
    phases = {"first-phase": Phase(), "second-phase": Phase(), "global-phase": Phase()}
    scalars: dict[str, object] = {}
    match_features: tuple[str, ...] = ()
    summary_features: tuple[str, ...] = ()
    for p in parents:
        inputs.update(p.inputs)
        constants.update(p.constants)
        functions.update(p.functions)
        onnx.update(p.onnx_models)
        rank_properties.update(p.rank_properties)
        phases["first-phase"] = _merge_phase(p.first_phase, phases["first-phase"])
        phases["second-phase"] = _merge_phase(p.second_phase, phases["second-phase"])
        phases["global-phase"] = _merge_phase(p.global_phase, phases["global-phase"])
        match_features = p.match_features or match_features
        summary_features = p.summary_features or summary_features
        for key in (
            "approximate_threshold",
            "post_filter_threshold",
            "target_hits_max_adjustment_factor",
        ):
            if getattr(p, key) is not None:
                scalars[key] = getattr(p, key)
    items = raw.items
    inputs.update(items.get("inputs", {}))
    constants.update(items.get("constants", {}))
    functions.update(items.get("functions", {}))
    onnx.update(items.get("onnx", {}))
    rank_properties.update(items.get("rank-properties", {}))
    for kind in phases:
        phases[kind] = _merge_phase(items.get(kind), phases[kind])
    if "match-features" in items:
        match_features = items["match-features"]
    if "summary-features" in items:
        summary_features = items["summary-features"]
    for key in (
        "approximate-threshold",
        "post-filter-threshold",
        "target-hits-max-adjustment-factor",
    ):
        if key in items:
            scalars[key.replace("-", "_")] = items[key]
    return RankProfile(
        name=raw.name,
        line=raw.line,
        inherits=tuple(raw.inherits),
        inputs=inputs,
        constants=constants,
        functions=functions,
        onnx_models=onnx,
        first_phase=phases["first-phase"],
        second_phase=phases["second-phase"],
        global_phase=phases["global-phase"],
        match_features=match_features,
        summary_features=summary_features,
        rank_properties=rank_properties,
        **scalars,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# ONNX checks


def _check_onnx(schema: Schema) -> None:
    """Declared input/output names must exist in the file; the file must be self-contained."""
    import onnxruntime as ort

    models: dict[Path, OnnxModel] = {}
    for profile in schema.rank_profiles.values():
        for model in profile.onnx_models.values():
            models.setdefault(model.path, model)
    for model in schema.onnx_models.values():
        models.setdefault(model.path, model)
    for path, model in models.items():
        if path.stat().st_size >= 2 * 1024**3:
            raise PackageError(schema.path, model.line, model.file, f"{model.file}: over 2 GB")
        try:
            sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises several exception types for bad files
            raise PackageError(
                schema.path, model.line, model.file, f"{model.file}: cannot load ONNX model ({e})"
            ) from None
        in_names = {i.name for i in sess.get_inputs()}
        out_names = {o.name for o in sess.get_outputs()}
        for name, _ in model.inputs:
            if name not in in_names:
                raise PackageError(
                    schema.path,
                    model.line,
                    model.file,
                    f"onnx-model '{model.name}': {model.file} has no input '{name}' "
                    f"(inputs: {sorted(in_names)})",
                )
        for name, _ in model.outputs:
            if name not in out_names:
                raise PackageError(
                    schema.path,
                    model.line,
                    model.file,
                    f"onnx-model '{model.name}': {model.file} has no output '{name}' "
                    f"(outputs: {sorted(out_names)})",
                )
        missing = in_names - {n for n, _ in model.inputs}
        if missing:
            raise PackageError(
                schema.path,
                model.line,
                model.file,
                f"onnx-model '{model.name}': inputs {sorted(missing)} of {model.file} "
                "are not mapped",
            )


def parse_schema(path: Path, package_dir: Path) -> Schema:
    """Parse one .sd file of the package (no ONNX file checks)."""
    return _SchemaParser(path, package_dir).parse()


def load_schemas(package_dir: Path) -> dict[str, Schema]:
    """Parse every `schemas/*.sd` of the package and check the ONNX models they reference."""
    package_dir = Path(package_dir)
    schema_dir = package_dir / "schemas"
    files = sorted(schema_dir.glob("*.sd"))
    if not files:
        raise PackageError(schema_dir, 0, "schemas", "no schemas/*.sd files in the package")
    schemas: dict[str, Schema] = {}
    for path in files:
        schema = parse_schema(path, package_dir)
        _check_onnx(schema)
        schemas[schema.name] = schema
    return schemas
