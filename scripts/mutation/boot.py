"""Start Synapse with one function replaced (issue 20): ``python boot.py MUTANT -c CONFIG``.

Run by Synapse's own python (the cached virtual environment), in place of ``-m
synapse.app.homeserver``: it looks ``MUTANT`` up in :mod:`mutants` (beside this file),
imports the module that holds the target, puts the mutant's replacement where the
original was (by name: an attribute of a module or of a class; the same for each of its
``also`` targets, when it has any), and runs Synapse's homeserver (its ``main``) with the
remaining arguments. ``none`` runs Synapse unchanged.
Nothing of Synapse is copied here: a replacement is a few lines of ours that call the
original, or not.
"""

from __future__ import annotations

import importlib
import sys

import mutants


def patch(target: str, make: mutants.Factory) -> None:
    """Replace ``module:Owner.attr`` (or ``module:function``) by ``make(original)``."""
    module_name, _, path = target.partition(":")
    owner: object = importlib.import_module(module_name)
    *parents, attr = path.split(".")
    for name in parents:
        owner = getattr(owner, name)
    original = owner.__dict__[attr] if isinstance(owner, type) else getattr(owner, attr)
    if isinstance(original, staticmethod):
        setattr(owner, attr, staticmethod(make(original.__func__)))
    else:
        setattr(owner, attr, make(original))


def main(argv: list[str]) -> None:
    """Patch as ``argv[0]`` says, then run the homeserver with the rest of ``argv``.

    The homeserver's module is imported first, so that Synapse's modules load in its own
    order (importing a handler first can meet a circular import), and nothing has been
    built from them yet when the target is replaced."""
    name, rest = argv[0], argv[1:]
    homeserver = importlib.import_module("synapse.app.homeserver")
    if name != "none":
        mutant = mutants.BY_NAME[name]
        for target, make in ((mutant.target, mutant.make), *mutant.also):
            patch(target, make)
            print(f"mutation: {name}: {target} replaced", file=sys.stderr, flush=True)
    sys.argv = ["synapse.app.homeserver", *rest]
    homeserver.main()


if __name__ == "__main__":
    main(sys.argv[1:])
