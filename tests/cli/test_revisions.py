"""Revision expressions through the CLI: names, ~N, #N, id prefixes."""

from __future__ import annotations

from dataclasses import replace

from mvcstore import Repo
from mvcstore.objects import object_id
from mvcstore.stores.base import put_object


def test_revision_expressions_resolve_to_the_expected_epochs(history):
    ids = history.ids
    expected = {
        "main": ids["main#3"],
        "main~1": ids["main#2"],
        "main#1": ids["main#1"],
        "fork~2": ids["main#2"],
        "HEAD~3": ids["main#1"],
        "fork#3": ids["fork#3"],
        ids["fork#3"][:7]: ids["fork#3"],
        ids["main#2"]: ids["main#2"],
    }

    for revision, epoch_id in expected.items():
        shown = history.mvc("show", revision, "--json").json()
        assert shown["id"] == epoch_id, revision


def test_unknown_revisions_exit_1_with_what_exists_hint(history):
    name = history.mvc.fails("show", "no-such-session")
    too_far = history.mvc.fails("show", "main~7")
    no_id = history.mvc.fails("log", "0123456789abcdef0123")
    malformed = history.mvc.fails("show", "main#")

    assert "unknown revision 'no-such-session'" in name.err
    assert "mvc log --all" in name.err
    assert "unknown revision 'main~7'" in too_far.err
    assert "no epoch id starts with it" in no_id.err
    assert "'main#'" in malformed.err


def _add_prefix_twins(root):
    """Store two epochs whose ids share their first 4 hex digits."""
    with Repo.open(root) as repo:
        base = repo.resolve("main")
        by_prefix = {}
        attempt = 0
        while True:
            twin = replace(
                base,
                parents=(base.id,),
                number=base.number + 1,
                message=f"twin {attempt}",
                uid=f"twin-{attempt}",
                summary={},  # no metric documents are logged for them
            )
            prefix = object_id(twin).hex[:4]
            if prefix in by_prefix:
                break
            by_prefix[prefix] = twin
            attempt += 1
        twins = [by_prefix[prefix], twin]
        out = []
        for number, epoch in enumerate(twins):
            oid = put_object(repo.objects, epoch)
            repo.index.add(oid, epoch)
            repo.create_session(f"twin{number}", at=oid.hex)
            out.append(oid.hex)
        return prefix, out


def test_ambiguous_prefix_exits_1_listing_every_candidate(history):
    prefix, twins = _add_prefix_twins(history.root)

    result = history.mvc.fails("show", prefix)
    resolved = history.mvc("show", twins[1][:20], "--json").json()

    assert f"ambiguous revision '{prefix}'" in result.err
    for twin in twins:
        assert twin[:16] in result.err
    assert "more characters" in result.err
    assert resolved["id"] == twins[1]
