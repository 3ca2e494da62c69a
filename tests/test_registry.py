"""Registries: decorator, lazy in-tree entries, entry points, "did you mean", `cfbench list`."""
from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from cfbench.errors import CfbenchError
from cfbench.registry import Registry
from tests.conftest import REPO, invoke


# -- the mechanism ---------------------------------------------------------------------------
def test_decorator_registers_and_rejects_duplicates():
    reg = Registry("widget")

    @reg.register("alpha", description="first")
    class Alpha:
        pass

    assert reg.names() == ["alpha"]
    assert reg.get("alpha") is Alpha
    assert reg.describe("alpha")["description"] == "first"
    reg.register("alpha")(Alpha)  # the same object again (a module re-import) is fine
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("alpha")(type("Other", (), {}))
    with pytest.raises(ValueError, match="registered twice"):
        reg.lazy("alpha", "x:y")


def test_lazy_entry_imports_only_on_get(tmp_path, monkeypatch):
    (tmp_path / "lazy_widget_mod.py").write_text(
        textwrap.dedent(
            '''
            from tests_registry_target import REG

            @REG.register("gizmo")
            class Gizmo:
                """A gizmo from a decorator"""
            '''
        )
    )
    (tmp_path / "tests_registry_target.py").write_text(
        "from cfbench.registry import Registry\nREG = Registry('widget')\n"
        "REG.lazy('gizmo', 'lazy_widget_mod:Gizmo', description='listed without import')\n"
        "REG.lazy('plain', 'lazy_widget_mod:Gizmo')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    target = importlib.import_module("tests_registry_target")
    reg = target.REG
    assert reg.names() == ["gizmo", "plain"]
    assert reg.describe("gizmo") == {"description": "listed without import"}
    assert "lazy_widget_mod" not in sys.modules
    gizmo = reg.get("gizmo")  # the decorator fills the lazy entry
    assert "lazy_widget_mod" in sys.modules and gizmo.__name__ == "Gizmo"
    assert reg.entry("gizmo").loaded and reg.entry("gizmo").meta == {"description": "listed without import"}
    assert reg.get("plain") is gizmo  # no decorator for that name: the attribute is taken
    # an entry without listing metadata is described from the object
    assert reg.describe("plain")["description"] == "A gizmo from a decorator"


def test_unknown_name_says_did_you_mean():
    reg = Registry("method")
    reg.lazy("identity", "x:y", description="")
    reg.lazy("pgd", "x:z", description="")
    with pytest.raises(CfbenchError, match=r"Unknown method 'idenity'\. Did you mean: identity\? Known: identity, pgd\."):
        reg.get("idenity")
    with pytest.raises(CfbenchError) as info:
        reg.get("zzzzzz")
    assert "Did you mean" not in str(info.value) and "Known: identity, pgd" in str(info.value)
    assert "pgd" in reg and "pdg" not in reg


def test_real_registries_suggest_names():
    from cfbench.datasets import DATASETS
    from cfbench.methods import METHODS
    from cfbench.metrics import METRICS

    with pytest.raises(CfbenchError, match="Did you mean: pgd"):
        METHODS.get("pdg")
    with pytest.raises(CfbenchError, match="Did you mean: synthfaces"):
        DATASETS.get("synthface")
    with pytest.raises(CfbenchError, match="Did you mean: l1"):
        METRICS.get("l11")


def test_entry_point_group_adds_third_party_plugins(tmp_path, monkeypatch):
    """A distribution on sys.path whose entry points name the group is found, listed
    (metadata read from the class) and loaded."""
    dist = tmp_path / "thirdparty_cf-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-cf\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[cfbench.methods]\nshiny = thirdparty_cf_mod:Shiny\n")
    (tmp_path / "thirdparty_cf_mod.py").write_text(
        'class Shiny:\n    """Makes things shiny\n\n    More text."""\n    paper = "Doe 2024"\n    access = "black-box"\n'
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    reg = Registry("method", "cfbench.methods")
    reg.lazy("pgd", "cfbench.methods.pgd:PGD", description="in-tree", paper="p", access="white-box")
    assert "shiny" in reg.names()
    assert reg.entry("shiny").meta["source"] == "thirdparty-cf"
    assert "thirdparty_cf_mod" not in sys.modules  # listing names does not import it
    meta = reg.describe("shiny")
    assert meta["description"] == "Makes things shiny"
    assert meta["paper"] == "Doe 2024" and meta["access"] == "black-box"
    assert reg.get("shiny").__name__ == "Shiny"
    assert reg.describe("pgd")["description"] == "in-tree"  # an in-tree name is never replaced


# -- in-tree metadata never drifts from the classes ------------------------------------------------
def _in_tree_entries(registry):
    """Entries whose target lives in the cfbench package (not test or third-party plugins)."""
    entries = [registry.entry(name) for name in registry.names()]
    return [e for e in entries if str(e.target if e.loaded is False else e.target.__module__).startswith("cfbench.")]


@pytest.mark.parametrize("kind", ["methods", "metrics"])
def test_in_tree_listing_metadata_matches_the_classes(kind):
    """The lazy entries repeat the docstring's first line, ``paper`` and ``access`` so that
    listing need not import; after import they must be the same."""
    registry = importlib.import_module(f"cfbench.{kind}").__dict__[kind.upper()]
    entries = _in_tree_entries(registry)
    assert len(entries) >= (2 if kind == "methods" else 3)
    for entry in entries:
        meta = dict(entry.meta)
        cls = registry.get(entry.name)
        doc = (cls.__doc__ or "").strip().splitlines()
        assert meta.get("description") == (doc[0] if doc else None), entry.name
        for key in ("paper", "access"):
            if key in meta or getattr(cls, key, ""):
                assert meta.get(key) == getattr(cls, key, None), (entry.name, key)
        if kind == "methods":
            assert meta["access"] in ("white-box", "black-box") and meta["paper"]


# -- cfbench list ----------------------------------------------------------------------------------
def test_list_methods_shows_description_paper_and_access(workdir):
    result = invoke("list", "methods")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert result.stdout.splitlines()[0] == "methods:"
    assert {"identity", "pgd", "crashy", "nan", "typed"} <= set(lines)
    assert "Targeted projected gradient attack" in lines["pgd"]
    assert "[Madry et al., ICLR 2018; white-box]" in lines["pgd"]
    assert "[baseline; black-box]" in lines["identity"]


def test_list_everything_and_each_kind(workdir):
    result = invoke("list")
    assert result.exit_code == 0, result.output
    for header in ("methods:", "datasets:", "metrics:", "classifiers:"):
        assert header in result.stdout.splitlines()
    for name in ("toy", "synthfaces", "fr", "l1", "l2", "max_change", "toy-bright"):
        assert f"  {name} " in result.stdout
    metrics = invoke("list", "metrics").stdout
    assert "LDCE App. E eq. 12" in metrics and "datasets:" not in metrics
    datasets = invoke("list", "datasets").stdout
    assert "16 px flat colours (test fixture)  [tests]" in datasets


def test_list_imports_no_torch(tmp_path):
    """`cfbench list` must not import torch (nor numpy/pandas): in-tree plugins are lazy."""
    code = textwrap.dedent(
        """
        import sys
        from click.testing import CliRunner
        from cfbench.cli import main
        for kind in ([], ["methods"], ["datasets"], ["metrics"], ["classifiers"]):
            result = CliRunner().invoke(main, ["list", *kind])
            assert result.exit_code == 0, result.output
            heavy = [m for m in ("torch", "torchvision", "numpy", "pandas", "PIL") if m in sys.modules]
            assert not heavy, (kind, heavy)
        print("ok", result.stdout.count("\\n"))
        """
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")
