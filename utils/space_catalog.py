"""The named search spaces and their families (one space per role: search, latency grid, supernet
sampler), JSON space files, and the records artefacts keep of the spaces they were made for
(``space.json`` next to a supernet, the metadata of a latency predictor)."""

from __future__ import annotations

import json
import os
from typing import Any

from utils.cli import UserError
from utils.files import atomic_write, load_json_file
from utils.space import Grid, SearchSpace

# The spaces, as data (SPEC section 3). Every stage picks one by name with --space.
SPACES: dict[str, SearchSpace] = {
    space.name: space
    for space in (
        # Evolutionary search, KD setting: qkv tied to hidden, 12 heads.
        SearchSpace("paper_search", Grid(1, 5), Grid(144, 528, 12), Grid(128, 1024, 32), Grid(12, 12)),
        # The original latency table grid: 5 x 38 x 75 = 14,250 archs.
        SearchSpace("paper_latency", Grid(1, 5), Grid(120, 564, 12), Grid(128, 1016, 12), Grid(12, 12)),
        # The original's KD pre-training sampler: qkv independent of hidden. Its qkv starts at 144
        # (the original: 180) so that every qkv paper_search selects (qkv = hidden >= 144) is trained.
        SearchSpace("paper_supernet", Grid(1, 5), Grid(128, 564, 4), Grid(128, 1024, 4), Grid(12, 12),
                    Grid(144, 528, 12)),
        # The embedded demo (SPEC 9): small enough for minutes on 2 cores, yet wide enough that
        # dynamic int8 pays off (below hidden ~256 its per-Linear overhead makes int8 *slower*).
        # The search space is finer than the latency grid (same ranges, hidden 2x and FFN 4x the steps:
        # 756 archs, 636 of them off the 120-arch table), so the demo's predicted-vs-measured check is
        # held out, and each demo budget's window holds 40+ candidates for a real search.
        SearchSpace("demo_search", Grid(1, 4), Grid(192, 448, 32), Grid(256, 1536, 64), Grid(4, 4)),
        SearchSpace("demo_latency", Grid(1, 4), Grid(192, 448, 64), Grid(256, 1536, 256), Grid(4, 4)),
        SearchSpace("demo_supernet", Grid(1, 4), Grid(192, 448, 32), Grid(256, 1536, 64), Grid(4, 4),
                    Grid(192, 448, 32)),
    )
}


# The three roles a space plays, one per stage family: the supernet's sampler (pre-training), the
# latency grid (tables, predictor) and the search space (searcher, evaluator). A *space family* names
# one space per role; the named ones below, or a JSON file (``load_space_file``).
SPACE_ROLES = ("search", "latency", "supernet")
SPACE_FAMILIES: dict[str, dict[str, str]] = {
    "paper": {"search": "paper_search", "latency": "paper_latency", "supernet": "paper_supernet"},
    "demo": {"search": "demo_search", "latency": "demo_latency", "supernet": "demo_supernet"},
}
# What an artefact directory (a supernet) records about the spaces it was made for.
SPACE_FILE = "space.json"


def get_space(name: str) -> SearchSpace:
    try:
        return SPACES[name]
    except KeyError:
        raise UserError(f"--space: unknown space {name!r}; choose one of {', '.join(SPACES)}") from None


def family_of(space: SearchSpace | None) -> dict[str, SearchSpace] | None:
    """The named family a named space belongs to (``paper_supernet`` -> the ``paper`` spaces)."""
    if space is None:
        return None
    for roles in SPACE_FAMILIES.values():
        if space.name in roles.values() and SPACES.get(space.name) == space:
            return {role: SPACES[name] for role, name in roles.items()}
    return None


def _space_from_json(data: Any, name: str, where: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise UserError(f"{where}: a space must be a JSON object with layer_num, hidden_size, intermediate_size, "
                        "num_attention_heads[, qkv_size] as [start, stop, step]")
    fields = ("layer_num", "hidden_size", "intermediate_size", "num_attention_heads")
    missing = [field for field in fields if field not in data]
    if missing:
        raise UserError(f"{where}: missing {', '.join(missing)} (each [start, stop, step])")
    unknown = sorted(set(data) - set(fields) - {"qkv_size", "name"})
    if unknown:
        raise UserError(f"{where}: unknown field(s) {', '.join(unknown)}")
    grids = {}
    for field in fields + ("qkv_size",):
        value = data.get(field)
        if field == "qkv_size" and value in (None, "tied"):
            grids[field] = None
            continue
        if (not isinstance(value, list) or len(value) not in (2, 3)
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise UserError(f"{where}: {field} must be [start, stop] or [start, stop, step] of integers, got {value!r}")
        try:
            grids[field] = Grid(*value)
        except UserError as err:
            raise UserError(f"{where}: {field}: {err}") from None
    return SearchSpace(name=str(data.get("name") or name), layer_num=grids["layer_num"],
                       hidden_size=grids["hidden_size"], intermediate_size=grids["intermediate_size"],
                       num_attention_heads=grids["num_attention_heads"], qkv_size=grids["qkv_size"])


def load_space_file(path: str | os.PathLike) -> dict[str, SearchSpace]:
    """A space file: one space (``{"layer_num": [1, 5], ...}``, used for every role) or a family
    (``{"name": "mine", "search": {...}, "latency": {...}, "supernet": {...}}``, any subset of roles).
    Grids are ``[start, stop, step]``; ``"qkv_size": null`` (or absent) ties qkv to hidden.
    Returns ``{role: space}``; a single space is returned under the key ``"*"``."""
    path = os.fspath(path)
    data = load_json_file(path, "JSON space file")  # missing, a directory, encoding, depth, number size: one line
    stem = os.path.splitext(os.path.basename(path))[0]
    if isinstance(data, dict) and any(role in data for role in SPACE_ROLES):
        unknown = sorted(set(data) - set(SPACE_ROLES) - {"name", "description"})
        if unknown:
            raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; a space family has {', '.join(SPACE_ROLES)}")
        family = str(data.get("name") or stem)
        return {role: _space_from_json(data[role], f"{family}_{role}", f"{path}: {role}")
                for role in SPACE_ROLES if role in data}
    return {"*": _space_from_json(data, stem, path)}


def resolve_space(spec: str, role: str | None = None, flag: str = "--space") -> SearchSpace:
    """The space ``spec`` names for ``role``: a named space (``paper_search``), a family
    (``paper``, ``demo``: its space for ``role``) or a JSON space file (see ``load_space_file``)."""
    if spec in SPACES:
        return SPACES[spec]
    if spec in SPACE_FAMILIES:
        if role is None:
            raise UserError(f"{flag} {spec}: a space family; this stage needs one space")
        return SPACES[SPACE_FAMILIES[spec][role]]
    if spec.endswith(".json") or os.path.sep in spec or os.path.exists(spec):
        roles = load_space_file(spec)
        if "*" in roles:
            return roles["*"]
        if role is None or role not in roles:
            raise UserError(f"{flag} {spec}: the file has no '{role}' space (it has {', '.join(roles)})")
        return roles[role]
    raise UserError(f"{flag}: unknown space {spec!r}; choose a family ({', '.join(SPACE_FAMILIES)}), a space "
                    f"({', '.join(SPACES)}) or a JSON space file")


def space_record(roles: dict[str, SearchSpace]) -> dict:
    """The JSON an artefact stores about its spaces: ``{role: space.to_dict()}``."""
    return {role: space.to_dict() for role, space in roles.items() if space is not None}


def spaces_from_record(record: Any, where: str) -> dict[str, SearchSpace]:
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a space record")
    return {role: _space_from_json(data, data.get("name") or role, f"{where}: {role}")
            for role, data in record.items() if role in SPACE_ROLES}


def write_space_record(directory: str | os.PathLike, roles: dict[str, SearchSpace]) -> str:
    """``<directory>/space.json`` (atomic): the spaces an artefact was made for."""
    path = os.path.join(os.fspath(directory), SPACE_FILE)
    with atomic_write(path) as handle:
        json.dump(space_record(roles), handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def read_space_record(directory: str | os.PathLike) -> dict[str, SearchSpace]:
    """The spaces ``<directory>/space.json`` records (empty when the directory has none)."""
    path = os.path.join(os.fspath(directory), SPACE_FILE)
    if not os.path.isfile(path):
        return {}
    data = load_json_file(path, "space record")  # encoding, depth, number size: one line
    return spaces_from_record(data, path)


def roles_for(space: SearchSpace, role: str) -> dict[str, SearchSpace]:
    """What an artefact made with ``space`` in ``role`` records: its family when it is a named
    space, else just that role."""
    family = family_of(space)
    return dict(family) if family is not None else {role: space}


def recorded_roles(spec: str | None, role: str, space: SearchSpace) -> dict[str, SearchSpace]:
    """What an artefact made in ``role`` with ``space`` (resolved from ``--space spec``) records:
    the whole family when ``spec`` names one (a named family or a family file), with this role's
    actual space (range overrides included); else the named space's family; else just the role."""
    roles: dict[str, SearchSpace] = {}
    if spec in SPACE_FAMILIES:
        roles = {r: SPACES[name] for r, name in SPACE_FAMILIES[spec].items()}
    elif spec and spec not in SPACES and (spec.endswith(".json") or os.path.exists(spec)):
        roles = {r: s for r, s in load_space_file(spec).items() if r != "*"}
    if not roles:
        roles = dict(family_of(space) or {})
    roles[role] = space
    return roles


def predictor_space(metadata: dict) -> SearchSpace | None:
    """The latency space a predictor was trained on, as its metadata records it."""
    definition = metadata.get("space_definition")
    if isinstance(definition, dict):
        return SearchSpace.from_dict(definition)
    name = metadata.get("space")
    return get_space(name) if isinstance(name, str) and name in SPACES else None

