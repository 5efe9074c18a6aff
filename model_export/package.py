"""Checks of an export against the Vespa application package, and installing its ONNX models.

The package's schemas are parsed with the embedded engine's parser (the same one that serves
them). Checked, each mismatch reported with both sides (manifest and ``file:line`` of the .sd):

- the embedding width: ``product.embedding``, ``user.embedding`` and every rank-profile input
  ``query(q_user)`` (the nearestNeighbor query vector) against ``dimensions.embedding``;
- every onnx-model block whose file is ``models/<name>.onnx`` for an ONNX model of the export:
  its input names equal the model's graph inputs, its output names exist among the graph
  outputs, and where an input's source is ``query(x)`` or ``attribute(f)`` with a declared
  tensor type, that type's dimensions (d0, d1, ... in axis order) fit the model's fixed axes
  and the largest sizes the manifest records (``limits``: the history encoder's history_len);
  an integer input fed from float cells (``query(hist)``, ids) is accepted because Vespa converts
  cells to the model's input type, as long as the catalogue fits float32's exact integers;
- where an input's source is a function (the profile's ``cand``), the shape the expression
  builds (:mod:`model_export.cand_columns`) must fit the model's fixed axes, and the ranker's
  ``cand`` columns must come from the sources it was trained on, in order (the embedding, then
  the manifest's ``ranker.cand_features``: price, margin, popularity, freshness(created_at)).

Nothing is padded or truncated to make a mismatch fit: the export stops instead.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from model_export.manifest import ExportError, Manifest, OnnxEntry, describe_onnx
from vespa_app.engine.schema import OnnxModel, PackageError, Schema, TensorType, load_schemas

EMBEDDING_FIELD = "embedding"
EMBEDDED_TYPES = ("product", "user", "seller")
QUERY_VECTOR = "q_user"
_SOURCE = re.compile(r"^\s*(query|attribute)\(\s*([A-Za-z_][\w.]*)\s*\)\s*$")


@dataclass(frozen=True)
class Block:
    """One onnx-model block and where it is declared."""

    schema: Schema
    profile: str | None  # None: declared at schema level
    model: OnnxModel

    def where(self) -> str:
        scope = f"rank-profile {self.profile}: " if self.profile else ""
        return f"{_show(self.schema.path)}:{self.model.line}: {scope}onnx-model {self.model.name}"


def _show(path: Path) -> str:
    """A path relative to the working directory when it is below it (as people type them)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def parse_package(package: Path) -> dict[str, Schema]:
    package = Path(package)
    if not (package / "schemas").is_dir():
        raise ExportError(f"{package}: not a Vespa application package (no schemas/ folder)")
    try:
        return load_schemas(package)
    except PackageError as error:
        raise ExportError(f"application package does not load: {error}") from None


def onnx_blocks(schemas: dict[str, Schema]) -> list[Block]:
    """Every distinct onnx-model block (inherited copies in child profiles counted once)."""
    seen: set[tuple[str, int]] = set()
    blocks = []
    for schema in schemas.values():
        scoped = [(None, m) for m in schema.onnx_models.values()] + [
            (p.name, m) for p in schema.rank_profiles.values() for m in p.onnx_models.values()
        ]
        for profile, model in scoped:
            key = (str(schema.path), model.line)
            if key not in seen:
                seen.add(key)
                blocks.append(Block(schema, profile, model))
    return blocks


def check_dimensions(manifest: Manifest, schemas: dict[str, Schema]) -> list[str]:
    problems = []
    dim = manifest.embedding_dim
    for doc_type in EMBEDDED_TYPES:
        schema = schemas.get(doc_type)
        if schema is None:
            problems.append(
                f"manifest: {doc_type} embedding {dim}-d; package: no schema {doc_type}"
            )
            continue
        field = schema.fields.get(EMBEDDING_FIELD)
        tensor = field.type.tensor if field is not None else None
        if field is None or tensor is None:
            problems.append(
                f"manifest: {doc_type} embedding {dim}-d; {_show(schema.path)}: "
                f"no tensor field '{EMBEDDING_FIELD}'"
            )
        elif tensor.shape != (dim,):
            problems.append(
                f"manifest: {doc_type} embedding {dim}-d; {_show(schema.path)}:{field.line}: "
                f"{EMBEDDING_FIELD} {field.type.spec}"
            )
        for profile in schema.rank_profiles.values():
            wanted = profile.inputs.get(QUERY_VECTOR)
            if wanted is not None and wanted.type is not None and wanted.type.shape != (dim,):
                problem = (
                    f"manifest: query vector {dim}-d; {_show(schema.path)}:{wanted.line}: "
                    f"rank-profile {profile.name}: query({QUERY_VECTOR}) {wanted.type.spec}"
                )
                if problem not in problems:
                    problems.append(problem)
    return problems


def _source_type(block: Block, source: str) -> TensorType | None:
    match = _SOURCE.match(source)
    if not match:
        return None  # a function: its type is only known when the expression is evaluated
    kind, name = match.groups()
    if kind == "query":
        profiles = block.schema.rank_profiles
        candidates = [profiles[block.profile]] if block.profile else list(profiles.values())
        for profile in candidates:
            declared = profile.inputs.get(name)
            if declared is not None:
                return declared.type
        return None
    field = block.schema.fields.get(name)
    return field.type.tensor if field is not None else None


def _shape_fits(tensor: TensorType, shape: list[int | str]) -> bool:
    names = [d.name for d in tensor.dims]
    if names != [f"d{i}" for i in range(len(shape))]:
        return False
    return all(
        not isinstance(want, int) or want == d.size
        for d, want in zip(tensor.dims, shape, strict=True)
    )


def _int_input_problem(
    spec, declared: TensorType, num_items: int | None, side: str, where: str
) -> str | None:
    """An integer model input fed from float cells: Vespa (and the engine) convert the cells to
    the model's type, exact only while the ids fit a float32 mantissa."""
    from model_export.query import FLOAT_EXACT

    floats = declared.cell_type in ("float", "bfloat16", "int8")
    if not spec.type.startswith("int") or not floats or num_items is None:
        return None
    if num_items + 1 < FLOAT_EXACT:
        return None
    return (
        f"{side} input '{spec.name}' {spec.type} takes ids up to {num_items}; {where} "
        f"{declared.spec} cells hold integers exactly only below {FLOAT_EXACT}"
    )


def _limit_problems(
    entry: OnnxEntry,
    name: str,
    declared: TensorType,
    side: str,
    where: str,
    history_len: int | None = None,
):
    limits = entry.limits.get(name) or []
    for axis, (dim, limit) in enumerate(zip(declared.dims, limits, strict=False)):
        if limit is not None and dim.size is not None and dim.size > limit:
            yield (
                f"{side} input '{name}' accepts at most {limit} on axis {axis}; "
                f"{where} {declared.spec} sends {dim.size}"
            )
        elif history_len is not None and limit is not None and dim.size not in (None, limit):
            # A ranker's history: clients send manifest ranker.history_length cells (the
            # pipeline reads it), so a shorter query tensor would be refused at query time.
            yield (
                f"{side} input '{name}' reads {history_len} events on axis {axis} "
                f"(ranker.history_length); {where} {declared.spec} holds {dim.size}"
            )


def _function_problems(
    entry: OnnxEntry, block: Block, name: str, source: str, spec, cand: tuple[str, ...] | None
) -> list[str]:
    """A function source: the shape its expression builds against the model's input, and for
    the ranker's ``cand`` the source of every column against the ones it was trained on."""
    from model_export.cand_columns import describe, infer

    profile = block.schema.rank_profiles.get(block.profile) if block.profile else None
    function = profile.functions.get(source.strip()) if profile is not None else None
    if function is None:
        return []
    shape = infer(function.expression, block.schema, profile)
    if shape is None:
        return []  # not inferable here: the engine-matches-offline test is the proof
    side = f"manifest: {entry.name} ({entry.file})"
    where = (
        f"{_show(block.schema.path)}:{function.line}: rank-profile {block.profile}: "
        f'function {function.name} (onnx-model {block.model.name} input "{name}")'
    )
    built = ",".join(f"{d}[{shape.dims[d]}]" for d in sorted(shape.dims))
    wanted = [f"d{i}" for i in range(len(spec.shape))]
    if sorted(shape.dims) != wanted or any(
        isinstance(size, int) and shape.dims[f"d{i}"] != size for i, size in enumerate(spec.shape)
    ):
        return [f"{side} input '{name}' {spec.type}{spec.shape}; {where} builds ({built})"]
    columns = shape.columns.get(wanted[-1]) if wanted else None
    if cand is not None and columns is not None and columns != cand:
        return [
            f"{side} input '{name}' columns: {describe(cand)} ({len(cand)}); "
            f"{where} builds {describe(columns)} ({len(columns)})"
        ]
    return []


def check_block(
    entry: OnnxEntry,
    block: Block,
    num_items: int | None = None,
    cand: tuple[str, ...] | None = None,
    history_len: int | None = None,
) -> list[str]:
    """Problems of one onnx-model block against the manifest entry of the model it loads.
    ``num_items``: the catalogue size, for integer inputs (ids) fed from float cells. ``cand``:
    the column sources of the ranker's ``cand`` input (for the scorer's block).
    ``history_len``: a ranker history encoder's length; its limited inputs must hold exactly
    that many cells (neither more nor fewer than the client sends)."""
    side = f"manifest: {entry.name} ({entry.file})"
    problems = []
    graph_inputs = {t.name: t for t in entry.inputs}
    graph_outputs = {t.name: t for t in entry.outputs}
    declared_inputs = [name for name, _ in block.model.inputs]
    for name in declared_inputs:
        if name not in graph_inputs:
            problems.append(
                f"{side} has no input '{name}' (inputs: {', '.join(graph_inputs)}); "
                f'{block.where()}: input "{name}"'
            )
    for name in graph_inputs:
        if name not in declared_inputs:
            problems.append(
                f"{side} input '{name}' is not mapped; {block.where()} maps "
                f"{', '.join(declared_inputs) or 'no inputs'}"
            )
    for name, _alias in block.model.outputs:
        if name not in graph_outputs:
            problems.append(
                f"{side} has no output '{name}' (outputs: {', '.join(graph_outputs)}); "
                f'{block.where()}: output "{name}"'
            )
    for name, source in block.model.inputs:
        spec = graph_inputs.get(name)
        declared = _source_type(block, source)
        if spec is not None and declared is None and not _SOURCE.match(source):
            problems.extend(
                _function_problems(
                    entry, block, name, source, spec, cand if name == "cand" else None
                )
            )
        if spec is None or declared is None:
            continue
        where = f'{block.where()}: input "{name}": {source.strip()}'
        if not _shape_fits(declared, spec.shape):
            problems.append(
                f"{side} input '{name}' {spec.type}{spec.shape}; {where} {declared.spec}"
            )
            continue
        problems.extend(_limit_problems(entry, name, declared, side, where, history_len))
        problem = _int_input_problem(spec, declared, num_items, side, where)
        if problem:
            problems.append(problem)
    return problems


def matching_blocks(manifest: Manifest, schemas: dict[str, Schema]) -> dict[str, list[Block]]:
    """Export model name -> the package's onnx-model blocks that load ``models/<name>.onnx``."""
    names = manifest.onnx_by_name()
    found: dict[str, list[Block]] = {name: [] for name in names}
    for block in onnx_blocks(schemas):
        stem = Path(block.model.file).stem
        if Path(block.model.file).parent.name == "models" and stem in names:
            found[stem].append(block)
    return found


def check_files(folder: Path, manifest: Manifest) -> None:
    """Each ONNX file is self-contained and has the names/types/shapes the manifest records."""
    for entry in manifest.onnx:
        path = Path(folder) / entry.file
        if not path.is_file():
            raise ExportError(f"manifest: {entry.name} at {entry.file}; {path}: no such file")
        actual = describe_onnx(path, entry.name, Path(folder), entry.role)
        for what in ("inputs", "outputs"):
            if getattr(actual, what) != getattr(entry, what):
                want = [(t.name, t.type, t.shape) for t in getattr(entry, what)]
                got = [(t.name, t.type, t.shape) for t in getattr(actual, what)]
                raise ExportError(f"manifest: {entry.name} {what} {want}; {path}: {what} {got}")


def check_package(folder: Path, manifest: Manifest, package: Path) -> dict[str, list[Block]]:
    """Raise ExportError listing every mismatch; returns the blocks each model would serve."""
    check_files(folder, manifest)
    schemas = parse_package(package)
    problems = check_dimensions(manifest, schemas)
    blocks = matching_blocks(manifest, schemas)
    cand, encoder, history_len = None, None, None
    if manifest.ranker:
        from model_export.cand_columns import expected_columns
        from model_export.ranker import PROFILE_MODELS

        ranker = manifest.ranker
        cand = expected_columns(
            manifest.embedding_dim, ranker.get("cand_features", []), ranker.get("cand_codes", [])
        )
        encoder = PROFILE_MODELS.get(str(ranker.get("profile", "ranking")), (None,))[0]
        history_len = ranker.get("history_length")
    for name, entry in manifest.onnx_by_name().items():
        length = history_len if name == encoder else None
        for block in blocks[name]:
            problems.extend(
                check_block(entry, block, manifest.dataset.get("num_items"), cand, length)
            )
    if problems:
        raise ExportError(
            "export does not match the application package:\n  " + "\n  ".join(problems)
        )
    return blocks


def install(folder: Path, manifest: Manifest, package: Path) -> list[Path]:
    """Copy the export's ONNX models that the package references into its models/ folder.

    Checks first; after copying the package must still load, otherwise the previous files are
    put back (an install never leaves a package the engine refuses).
    """
    package = Path(package)
    blocks = check_package(folder, manifest, package)
    targets = {
        name: sorted({b.model.path for b in found}) for name, found in blocks.items() if found
    }
    backups: list[tuple[Path, bytes | None]] = []
    installed = []
    for name, paths in targets.items():
        source = Path(folder) / manifest.onnx_by_name()[name].file
        for path in paths:
            backups.append((path, path.read_bytes() if path.is_file() else None))
            tmp = path.with_suffix(".onnx.tmp")
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
            installed.append(path)
    try:
        parse_package(package)
    except ExportError:
        for path, old in backups:
            if old is None:
                path.unlink(missing_ok=True)
            else:
                path.write_bytes(old)
        raise
    return installed
