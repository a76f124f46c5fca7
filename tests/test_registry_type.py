"""`Registry`, the one type behind every registry (models, datasets, optimizers...): checks, messages."""

from typing import NamedTuple

import pytest

from jaxcnn._registry import Registry


def _cell():
    """A notebook cell: each run defines new objects under the same names."""

    def namer(model, paths):
        return {}

    return namer


class _Family(NamedTuple):
    namer: object
    classifier: str


def test_a_name_is_taken_unless_it_is_the_same_definition_or_overwritten():
    registry = Registry("thing")
    first, again = _cell(), _cell()
    assert registry.register("a", first) is first
    assert registry.register("a")(again) is again  # the cell run twice
    with pytest.raises(
        ValueError, match=r"thing name 'a' is already registered \(test_registry_type._cell.<locals>.namer"
    ):
        registry.register("a", len)
    registry.register("a", len, overwrite=True)
    assert registry.get("a") is len


def test_settings_entries_are_the_same_definition_by_their_items():
    registry = Registry("family", entry_type=_Family)
    registry.register("f", _Family(_cell(), "fc.weight"))
    registry.register("f", _Family(_cell(), "fc.weight"))
    with pytest.raises(
        ValueError, match=r"already registered \(\(test_registry_type._cell.<locals>.namer, 'fc.weight'\)\)"
    ):
        registry.register("f", _Family(_cell(), "head.weight"))
    with pytest.raises(TypeError, match="the family 'g' must be a _Family, got function"):
        registry.register("g", _cell())


@pytest.mark.parametrize("name", ["", None, 3])
def test_a_name_is_a_non_empty_string(name):
    with pytest.raises(TypeError, match="name must be a non-empty string"):
        Registry("thing").register(name, len)


def test_entries_are_callable_by_default():
    with pytest.raises(TypeError, match="the thing 'a' must be callable, got int"):
        Registry("thing").register("a", 3)


def test_unknown_names_list_the_registered_ones():
    registry = Registry("thing")
    registry.register("b", len)
    registry.register("a", abs)
    assert registry.names() == ["a", "b"] and "a" in registry and "c" not in registry
    assert registry.unregister("b") is len and registry.names() == ["a"]
    for lookup in (registry.get, registry.unregister):
        with pytest.raises(ValueError, match="unknown thing name 'b'; available: a$"):
            lookup("b")
