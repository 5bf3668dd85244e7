"""``torchenv spec outdated``: is each variant on the newest release its source offers?

Sources, per variant kind (each parse below is a pure function of a documented response format;
fetching is :mod:`torchenv.spec.fetch`):

- pip, source: PyPI's JSON API (``GET {pypi}/torch/json``, ``{pypi}/torchvision/json``;
  https://docs.pypi.org/api/json/). Only a torch release with a torchvision of its paired series
  (``compat``) counts, and only releases with a wheel this variant can install (its CPython, Linux
  x86_64, not yanked, not a pre-release).
- ngc: the registry's HTTP API v2 (OCI distribution spec): ``GET /v2/nvidia/pytorch/tags/list``
  behind an anonymous bearer token, then the newest ``YY.MM-py3`` tag's manifest (the amd64 entry of
  its index) and config blob, whose ``Env`` holds ``PYTORCH_VERSION`` and ``CUDA_VERSION``: NGC tags
  carry no torch version.
- conda: conda-forge's per-package file listing on anaconda.org (``GET
  {channel}/pytorch/files``: every file with its ``attrs.subdir``/``build``/``build_number``), never the
  full ``repodata.json`` (hundreds of MB); only builds for the variant's CUDA (build string
  ``cuda130_...`` for cuda_version 13.0) count.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from packaging.version import InvalidVersion, Version

from torchenv.spec import compat
from torchenv.spec.fetch import JSON, Fetch, Response, Unreachable
from torchenv.spec.model import StackSpec, VariantSpec, parse

DEFAULT_PYPI = "https://pypi.org/pypi"
DEFAULT_CHANNEL = "https://api.anaconda.org/package/conda-forge"
_NGC_TAG = re.compile(r"^(\d\d)\.(\d\d)-py3$")
_MANIFEST_TYPES = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)


@dataclass(frozen=True)
class Finding:
    """One variant: what it pins, the newest its source offers, and the spec edits that bump it."""

    variant: str
    source: str
    current: str
    newest: str
    edits: tuple[tuple[str, str, str], ...] = ()  # (table, key, new value)
    note: str = ""

    @property
    def outdated(self) -> bool:
        return bool(self.edits)


# --------------------------------------------------------------------------------------------
# JSON answers, narrowed: an object or a list where one is expected, else empty


def _object(value: JSON) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {}


def _array(value: JSON) -> list[JSON]:
    return value if isinstance(value, list) else []


# --------------------------------------------------------------------------------------------
# PyPI (pure)


@dataclass(frozen=True)
class PypiFile:
    """One file of a release in PyPI's JSON API (``releases[version][i]``)."""

    filename: str
    yanked: bool


def pypi_releases(doc: JSON) -> dict[str, list[PypiFile]]:
    """version -> files of a PyPI JSON API document; a release whose files are not a list is left out."""
    releases = doc.get("releases") if isinstance(doc, dict) else None
    if not isinstance(releases, dict):
        raise ValueError("no 'releases' object")
    return {
        text: [PypiFile(str(f.get("filename", "")), bool(f.get("yanked"))) for f in files if isinstance(f, dict)]
        for text, files in releases.items()
        if isinstance(files, list)
    }


def _wheel_fits(filename: str, python: str) -> bool:
    """A wheel this variant's CPython can install on Linux x86_64 (PEP 427 file name)."""
    if not filename.endswith(".whl"):
        return False
    parts = filename[:-4].split("-")
    if len(parts) < 5:
        return False
    py_tags, platforms = parts[-3].split("."), parts[-1].split(".")
    nodot = "".join(python.split(".")[:2])
    python_ok = any(t in {f"cp{nodot}", "py3", f"py{nodot}"} for t in py_tags)
    platform_ok = any(p.endswith("x86_64") and ("linux" in p) for p in platforms)
    return python_ok and platform_ok


def pypi_versions(doc: JSON, python: str) -> list[Version]:
    """Final releases in a PyPI JSON API document that have an installable, unyanked wheel."""
    out: list[Version] = []
    for text, files in pypi_releases(doc).items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if version.is_prerelease or version.is_devrelease:
            continue
        if any(not f.yanked and _wheel_fits(f.filename, python) for f in files):
            out.append(version)
    return sorted(out)


def _paired_series(torch_version: Version) -> tuple[int, int] | None:
    series = (torch_version.major, torch_version.minor)
    pair = compat.TORCH_TORCHVISION.get(series)
    if pair is None and series > max(compat.TORCH_TORCHVISION) and series[0] == 2:
        pair = (0, series[1] + 15)  # torchvision's README pattern for a torch newer than the table
    return pair


def newest_pair(torch: Iterable[Version], torchvision: Iterable[Version]) -> tuple[Version, Version] | None:
    """The newest torch that has a torchvision of its paired series released, with that torchvision."""
    visions = sorted(torchvision)
    for candidate in sorted(torch, reverse=True):
        series = _paired_series(candidate)
        matching = [v for v in visions if (v.major, v.minor) == series]
        if matching:
            return candidate, matching[-1]
    return None


def pypi_finding(variant: VariantSpec, torch_doc: JSON, vision_doc: JSON) -> Finding:
    pair = newest_pair(pypi_versions(torch_doc, variant.python), pypi_versions(vision_doc, variant.python))
    current = f"torch {variant.torch} / torchvision {variant.torchvision}"
    if pair is None:
        return Finding(variant.name, "PyPI", current, "no compatible pair found", note="nothing to compare with")
    torch_v, vision_v = str(pair[0]), str(pair[1])
    edits: list[tuple[str, str, str]] = []
    where = f"variants.{variant.name}"
    if Version(variant.torch).public != torch_v:
        edits.append((where, "torch", torch_v))
        if variant.variant_kind == "source":
            edits.append((where, "torch_tag", f"v{torch_v}"))
    if variant.torchvision is None or Version(variant.torchvision).public != vision_v:
        edits.append((where, "torchvision", vision_v))
        if variant.variant_kind == "source":
            edits.append((where, "torchvision_tag", f"v{vision_v}"))
    skipped = [str(v) for v in pypi_versions(torch_doc, variant.python) if v > pair[0]]
    note = f"torch {', '.join(skipped)} not counted: no torchvision of its series yet" if skipped else ""
    return Finding(variant.name, "PyPI", current, f"torch {torch_v} / torchvision {vision_v}", tuple(edits), note)


# --------------------------------------------------------------------------------------------
# NGC registry (pure)


def parse_bearer_challenge(header: str) -> dict[str, str]:
    """``Bearer realm="https://nvcr.io/proxy_auth",scope="repository:nvidia/pytorch:pull"`` -> fields."""
    if not header.lower().startswith("bearer "):
        return {}
    return {k.lower(): v for k, v in re.findall(r'(\w+)="([^"]*)"', header[7:])}


def ngc_newest_tag(tags: Sequence[str]) -> str | None:
    """The newest monthly release tag (``26.09-py3``); other tags (``-igpu``, ``latest``) are skipped."""
    releases = [t for t in tags if _NGC_TAG.match(t)]
    return max(releases, key=lambda t: tuple(int(x) for x in _NGC_TAG.match(t).groups()), default=None)  # type: ignore[union-attr]


def platform_manifest(index: JSON, architecture: str = "amd64") -> str | None:
    """The digest of the linux/``architecture`` manifest in an image index (None: not an index)."""
    for entry in map(_object, _array(_object(index).get("manifests"))):
        platform = _object(entry.get("platform"))
        if platform.get("os") == "linux" and platform.get("architecture") == architecture:
            return str(entry["digest"])
    return None


def manifest_config_digest(manifest: JSON) -> str:
    """The digest of an image manifest's config blob ("" when it names none)."""
    return str(_object(_object(manifest).get("config")).get("digest", ""))


def image_env(config: JSON) -> dict[str, str]:
    """The ``Env`` of an image config blob as a dict."""
    env = _array(_object(_object(config).get("config")).get("Env"))
    return dict(item.split("=", 1) for item in env if isinstance(item, str) and "=" in item)


def ngc_finding(variant: VariantSpec, newest_tag: str, env: Mapping[str, str]) -> Finding:
    image = str(variant.options["image"])
    repo, _, tag = image.rpartition(":")
    torch_v = env.get("PYTORCH_VERSION", "")
    cuda_full = env.get("CUDA_VERSION", "")
    current = f"{tag} (torch {variant.torch}, CUDA {variant.build.cuda})"
    newest = f"{newest_tag} (torch {torch_v or '?'}, CUDA {cuda_full or '?'})"
    if newest_tag == tag:
        return Finding(variant.name, "NGC registry", current, newest)
    where = f"variants.{variant.name}"
    edits: list[tuple[str, str, str]] = [(where, "image", f"{repo}:{newest_tag}")]
    note = []
    if torch_v and torch_v != variant.torch:
        edits.append((where, "torch", torch_v))
        try:
            pair = _paired_series(Version(torch_v))
        except InvalidVersion:
            pair = None
        series = f"{pair[0]}.{pair[1]}" if pair else None
        if series and variant.torchvision and not variant.torchvision.startswith(f"{series}."):
            edits.append((where, "torchvision", f"{series}.0a0"))
            note.append(f"torchvision {series}.0a0 is derived from the torch series (the image config does not say)")
    cuda = ".".join(cuda_full.split(".")[:2])
    if cuda and cuda != variant.build.cuda:
        edits.append((f"{where}.build", "cuda", cuda))
    if variant.options.get("digest"):
        edits.append((where, "digest", ""))
        note.append("the digest pin is cleared: pin the new image's digest once mirrored")
    note.append("arch_list and min_driver: check the release notes of the new image")
    return Finding(variant.name, "NGC registry", current, newest, tuple(edits), "; ".join(note))


# --------------------------------------------------------------------------------------------
# conda-forge (pure)


@dataclass(frozen=True)
class CondaFile:
    """One file of an anaconda.org package file listing (``GET /package/{channel}/{name}/files``)."""

    version: str
    subdir: str | None
    build: str
    build_number: int
    labels: tuple[str, ...] | None  # None: the listing gives no labels


def conda_files(listing: Iterable[JSON]) -> list[CondaFile]:
    """The entries of a file listing that are objects, as records."""
    out: list[CondaFile] = []
    for item in map(_object, listing):
        if not item:
            continue
        attrs = _object(item.get("attrs"))
        subdir, number, labels = attrs.get("subdir"), attrs.get("build_number", 0), item.get("labels")
        out.append(
            CondaFile(
                version=str(item.get("version")),
                subdir=subdir if isinstance(subdir, str) else None,
                build=str(attrs.get("build", "")),
                build_number=int(number) if isinstance(number, int | float | str) else 0,
                labels=None if labels is None else tuple(x for x in _array(labels) if isinstance(x, str)),
            )
        )
    return out


def conda_newest(files: Iterable[JSON], cuda: str, subdir: str = "linux-64") -> tuple[str, int] | None:
    """(version, build number) of the newest ``main``-labelled build for CUDA ``cuda`` in an
    anaconda.org package file listing."""
    prefix = f"cuda{cuda.replace('.', '')}_"
    best: tuple[Version, int, str] | None = None
    for item in conda_files(files):
        if item.subdir != subdir or (item.labels is not None and "main" not in item.labels):
            continue
        if not item.build.startswith(prefix):
            continue
        try:
            version = Version(item.version)
        except InvalidVersion:
            continue
        if version.is_prerelease:
            continue
        key = (version, item.build_number, item.version)
        if best is None or key[:2] > best[:2]:
            best = key
    return (best[2], best[1]) if best else None


def conda_finding(variant: VariantSpec, pytorch_files: Iterable[JSON], vision_files: Iterable[JSON]) -> Finding:
    cuda = str(variant.options.get("cuda_version") or variant.build.cuda)
    current = f"pytorch {variant.torch} / torchvision {variant.torchvision} (CUDA {cuda})"
    found = conda_newest(pytorch_files, cuda)
    if found is None:
        return Finding(variant.name, "conda-forge", current, f"no pytorch build for CUDA {cuda}")
    version, build = found
    series = compat.torchvision_for(version)
    visions = sorted(Version(f.version) for f in conda_files(vision_files) if f.subdir == "linux-64")
    paired = [v for v in visions if series and f"{v.major}.{v.minor}" == series and not v.is_prerelease]
    vision = str(paired[-1]) if paired else None
    newest = f"pytorch {version} (build {build}) / torchvision {vision or '?'} (CUDA {cuda})"
    where = f"variants.{variant.name}"
    edits: list[tuple[str, str, str]] = []
    if Version(version) != Version(variant.torch):
        edits.append((where, "torch", version))
    if vision and vision != variant.torchvision:
        edits.append((where, "torchvision", vision))
    return Finding(variant.name, "conda-forge", current, newest, tuple(edits))


# --------------------------------------------------------------------------------------------
# Fetching (impure: everything above is called with what this returns)


@dataclass(frozen=True)
class Sources:
    pypi: str = DEFAULT_PYPI
    registry: str | None = None  # default: the image's own registry host
    channel: str = DEFAULT_CHANNEL


def _get_json(fetch: Fetch, source: str, url: str, flag: str, headers: Mapping[str, str] | None = None) -> JSON:
    try:
        reply = fetch(url, headers or {})
    except OSError as exc:
        raise Unreachable(source, url, str(exc) or type(exc).__name__, flag) from None
    if reply.status != 200:
        raise Unreachable(source, url, f"HTTP {reply.status}", flag)
    try:
        return reply.json()
    except (UnicodeDecodeError, ValueError):
        raise Unreachable(source, url, "the answer is not JSON", flag) from None


def _registry_get(fetch: Fetch, url: str, accept: str, token: list[str]) -> Response:
    """GET from a registry, answering one bearer challenge with an anonymous token."""
    flag = "--registry"
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {token[0]}"
    try:
        reply = fetch(url, headers)
        if reply.status == 401 and not token:
            challenge = parse_bearer_challenge(
                next((v for k, v in reply.headers.items() if k.lower() == "www-authenticate"), "")
            )
            if "realm" not in challenge:
                raise Unreachable("the NGC registry", url, "HTTP 401 without a bearer challenge", flag)
            query = urlencode({k: v for k, v in challenge.items() if k in {"service", "scope"}})
            answer = _object(_get_json(fetch, "the NGC registry", f"{challenge['realm']}?{query}", flag))
            token.append(str(answer.get("token") or answer.get("access_token") or ""))
            reply = fetch(url, {**headers, "Authorization": f"Bearer {token[0]}"})
    except OSError as exc:
        raise Unreachable("the NGC registry", url, str(exc) or type(exc).__name__, flag) from None
    if reply.status != 200:
        raise Unreachable("the NGC registry", url, f"HTTP {reply.status}", flag)
    return reply


def _registry_json(fetch: Fetch, url: str, accept: str, token: list[str]) -> JSON:
    try:
        return _registry_get(fetch, url, accept, token).json()
    except (UnicodeDecodeError, ValueError):
        raise Unreachable("the NGC registry", url, "the answer is not JSON", "--registry") from None


def check_pypi(variant: VariantSpec, fetch: Fetch, sources: Sources) -> Finding:
    base = sources.pypi.rstrip("/")
    torch_doc = _get_json(fetch, "PyPI", f"{base}/torch/json", "--pypi-url")
    vision_doc = _get_json(fetch, "PyPI", f"{base}/torchvision/json", "--pypi-url")
    try:
        return pypi_finding(variant, torch_doc, vision_doc)
    except (ValueError, AttributeError, TypeError) as exc:
        raise Unreachable("PyPI", f"{base}/torch/json", f"unexpected answer ({exc})", "--pypi-url") from None


def check_ngc(variant: VariantSpec, fetch: Fetch, sources: Sources) -> Finding:
    image = str(variant.options["image"])
    name = image.rpartition(":")[0]
    host, _, repo = name.partition("/")
    base = (sources.registry or f"https://{host}").rstrip("/")
    token: list[str] = []
    tags: list[str] = []
    url: str | None = f"{base}/v2/{repo}/tags/list?n=1000"
    for _page in range(50):  # the tags list is paginated with a Link header (distribution spec)
        if url is None:
            break
        reply = _registry_get(fetch, url, "application/json", token)
        try:
            listing = reply.json()
        except (UnicodeDecodeError, ValueError):
            listing = None
        if not isinstance(listing, dict):
            raise Unreachable("the NGC registry", url, "the tag list is not JSON", "--registry")
        tags += [str(t) for t in _array(listing.get("tags"))]
        link = next((v for k, v in reply.headers.items() if k.lower() == "link"), "")
        match = re.search(r'<([^>]+)>;\s*rel="?next"?', link)
        url = (match.group(1) if match.group(1).startswith("http") else base + match.group(1)) if match else None
    newest = ngc_newest_tag(tags)
    if newest is None:
        raise Unreachable("the NGC registry", f"{base}/v2/{repo}/tags/list", "no YY.MM-py3 tag listed", "--registry")
    manifest = _registry_json(fetch, f"{base}/v2/{repo}/manifests/{quote(newest)}", _MANIFEST_TYPES, token)
    digest = platform_manifest(manifest)
    if digest is not None:
        manifest = _registry_json(fetch, f"{base}/v2/{repo}/manifests/{digest}", _MANIFEST_TYPES, token)
    config_digest = manifest_config_digest(manifest)
    config = _registry_json(fetch, f"{base}/v2/{repo}/blobs/{config_digest}", "application/json", token)
    return ngc_finding(variant, newest, image_env(config))


def check_conda(variant: VariantSpec, fetch: Fetch, sources: Sources) -> Finding:
    base = sources.channel.rstrip("/")
    pytorch = _get_json(fetch, "conda-forge", f"{base}/pytorch/files", "--channel-url")
    vision = _get_json(fetch, "conda-forge", f"{base}/torchvision/files", "--channel-url")
    if not isinstance(pytorch, list) or not isinstance(vision, list):
        raise Unreachable("conda-forge", f"{base}/pytorch/files", "not a file listing", "--channel-url")
    return conda_finding(variant, pytorch, vision)


CHECKERS = {"pip": check_pypi, "source": check_pypi, "ngc": check_ngc, "conda": check_conda}


# --------------------------------------------------------------------------------------------
# --write: the bumped spec as a diff


def _table_span(lines: list[str], table: str) -> tuple[int, int] | None:
    header = re.compile(rf"^\s*\[\s*{re.escape(table)}\s*\]\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines))
    return start + 1, end


def bump(text: str, edits: Iterable[tuple[str, str, str]]) -> tuple[str, list[str]]:
    """Apply value edits to the spec's text, touching only the value of each ``key = "..."`` line
    (its comment kept). Returns (new text, notes): a note for every edit that could not be placed and
    for every comment line that still names a replaced value -- comments are never rewritten."""
    lines = text.splitlines(keepends=True)
    notes: list[str] = []
    old_values: list[tuple[str, str]] = []  # (variant table, old value)
    for table, key, value in edits:
        span = _table_span(lines, table)
        pattern = re.compile(rf'^(\s*{re.escape(key)}\s*=\s*)"([^"]*)"(.*)$', re.DOTALL)
        for i in range(*(span or (0, 0))):
            match = pattern.match(lines[i])
            if match:
                old_values.append((".".join(table.split(".")[:2]), match.group(2)))
                lines[i] = f'{match.group(1)}"{value}"{match.group(3)}'
                break
        else:
            notes.append(f'[{table}] {key}: no `{key} = "..."` line to change; set it to "{value}" by hand')
    for variant_table, old in sorted(set(old_values)):
        start, end = _variant_region(lines, variant_table)
        for i in range(start, end):
            stripped = lines[i].lstrip()
            comment = stripped if stripped.startswith("#") else (lines[i].split("#", 1)[1] if "#" in lines[i] else "")
            if old in comment:
                notes.append(f"line {i + 1}: a comment still names {old!r}; update it by hand")
    return "".join(lines), sorted(set(notes), key=lambda n: (len(n.split(":")[0]), n))


def _is_comment_or_blank(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def _variant_region(lines: list[str], variant_table: str) -> tuple[int, int]:
    """Lines that describe one variant: the comment block just above its first table, and its tables."""
    headers = [(i, m.group(1).strip()) for i, line in enumerate(lines) if (m := re.match(r"^\s*\[([^\]]+)\]", line))]
    mine = [i for i, name in headers if name == variant_table or name.startswith(variant_table + ".")]
    if not mine:
        return 0, 0
    start = mine[0]
    while start > 0 and _is_comment_or_blank(lines[start - 1]):
        start -= 1
    end = next((i for i, name in headers if i > mine[-1] and not name.startswith(variant_table)), len(lines))
    while end > start and end < len(lines) and _is_comment_or_blank(lines[end - 1]):
        end -= 1
    return start, end


def proposal(stack: StackSpec, text: str, findings: Sequence[Finding]) -> tuple[str, list[str]]:
    """The unified diff that bumps the outdated variants, and the notes that go with it."""
    new_text, notes = bump(text, [e for f in findings for e in f.edits])
    try:
        parse(new_text, path=stack.path)
    except Exception as exc:  # the bump must leave a valid spec; say why not
        notes.append(f"the bumped spec does not load as it stands: {exc}")
    diff = difflib.unified_diff(
        text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        stack.path,
        stack.path,
        "(as it is)",
        "(proposed by torchenv spec outdated)",
    )
    return "".join(diff), notes
