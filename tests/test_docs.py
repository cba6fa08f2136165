"""The shipped documentation points at what ships, and the AKS quick start's overlay builds.

Protects issue 9 point 10. Operators read README.md, manifests/README.md, the manifests' comments
(the ConfigMap among them) and the Dockerfile from a clone: every repository path they name must
exist in it, and none may send them to files that are not shipped (DESIGN.md, STYLE.md, the
development notes). The quick start's own kustomization, cut out of README.md as written, is
rendered with the real `kubectl kustomize` on top of `manifests/base`, with the image and the
kube-scheduler version the quick start puts in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"

SHIPPED = [
    ROOT / "README.md",
    ROOT / "manifests" / "README.md",
    ROOT / "simulations" / "README.md",
    ROOT / "Dockerfile",
    *sorted((ROOT / "manifests").rglob("*.yaml")),
    *sorted((ROOT / "examples").glob("*.yaml")),
]

# A relative path into the repository. Paths after a `/` (container paths such as
# /etc/epcsched/config.yaml), `$` or `<` (placeholders) are not the repository's.
PATH = re.compile(
    r"(?<![\w$<{./-])((?:\.\./)*(?:manifests|benchmarks|epcsched|simulations|examples|tests|"
    r"scripts|base|components|overlays|monitoring)/[\w./*-]*[\w*])"
)
NOT_SHIPPED = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared|/work/")


def prose(path: Path) -> str:
    """What a person reads in the file: YAML comments, or the whole text of other files."""
    text = path.read_text()
    if path.suffix == ".yaml":
        return "\n".join(line.split("#", 1)[1] for line in text.splitlines() if "#" in line)
    return text


def exists(token: str, where: Path) -> bool:
    # manifests/README.md shows an overlay beside a checkout named `epcsched/`.
    token = token.removeprefix("../epcsched/")
    for base in (ROOT, where.parent, ROOT / "manifests"):
        matches = list(base.glob(token)) if "*" in token else [base / token]
        if any(m.exists() for m in matches):
            return True
    return False


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_files_name_only_files_that_ship(path: Path) -> None:
    text = prose(path)
    assert not NOT_SHIPPED.findall(text), f"{path} names files that do not ship"
    missing = sorted({m for m in PATH.findall(text) if not exists(m, path)})
    assert missing == [], f"{path} names paths that are not in the repository"


def test_the_path_check_would_catch_a_missing_file(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("See `manifests/base/kustomization.yaml` and `manifests/nowhere.yaml`.\n")
    found = [m for m in PATH.findall(prose(doc)) if not exists(m, doc)]
    assert found == ["manifests/nowhere.yaml"]


def test_aks_quick_start_overlay_renders(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## AKS quick start", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"<<YAML\n(.*?)\nYAML\n", section, re.DOTALL)
    assert match, "the quick start writes its kustomization with a <<YAML here-document"
    kustomization = match.group(1).replace("$ACR", "myregistry").replace("$VERSION", "1.31.5")
    (tmp_path / "manifests").symlink_to(ROOT / "manifests")
    overlay = tmp_path / "my-aks"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(kustomization + "\n")
    if not Path(KUBECTL).exists():
        pytest.fail(f"kubectl not found at {KUBECTL}; it renders the overlay")
    done = subprocess.run(
        [KUBECTL, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    images = set()
    for doc in yaml.safe_load_all(done.stdout):
        spec = (doc or {}).get("spec", {}).get("template", {}).get("spec", {})
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            images.add(container["image"])
    assert "myregistry.azurecr.io/epcsched:0.1.0" in images
    assert "registry.k8s.io/kube-scheduler:v1.31.5" in images
    assert not any("registry.invalid" in image for image in images)
