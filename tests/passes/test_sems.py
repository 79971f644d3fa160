"""The sync pass's semaphore layouts (dojoc/codegen/sems.py): one table of every semaphore group."""

from __future__ import annotations

import pytest

from dojoc.codegen import sems
from dojoc.codegen.sems import Group, Layout, Life


def test_every_layout_fits_the_instruction_fields_and_groups_do_not_share_ids() -> None:
    for layout in sems.LAYOUTS:
        owners: dict[int, str] = {}
        for g in layout.all_groups:
            for i in layout.ids(g.name):
                assert 0 <= i < 1 << sems.SEM_BITS
                if g.alias is None:
                    assert i not in owners, (layout.family, g.name, owners.get(i))
                    owners[i] = g.name
    assert sems.MOST == max(layout.width for layout in sems.LAYOUTS) <= 1 << sems.SEM_BITS


def test_ids_are_packed_in_declaration_order_after_the_layout_they_extend() -> None:
    assert sems.MXU.ids("staged") == (0, 1) and sems.MXU.width == 6
    assert sems.BAND.ids("halo")[0] == sems.MXU.width  # beside the matrix pipeline that a chain member runs
    assert set(sems.BAND.ids("halo")).isdisjoint(i for g in sems.MXU.groups for i in sems.MXU.ids(g.name))
    # the band's halo is the one group pending into the next op, its reader, which runs the same layout
    assert [g.name for layout in sems.LAYOUTS for g in layout.groups if g.life is Life.INTO_NEXT] == ["halo"]


def test_an_alias_reuses_ids_and_a_layout_beyond_the_fields_is_refused() -> None:
    assert sems.SUMMA.ids("relay") == (sems.SUMMA.id("arrive"), sems.SUMMA.id("norm"))
    assert sems.SUMMA.id("relay_src") == sems.SUMMA.ids("dma_x")[2]
    with pytest.raises(ValueError, match="beyond"):
        Layout("too wide", (Group("a", 30, "a"), Group("b", 3, "b")))
    with pytest.raises(ValueError, match="declared twice"):
        Layout("twice", (Group("a", 1, "a"), Group("a", 1, "a")))
    with pytest.raises(AssertionError):
        sems.SUMMA.id("dma_a")  # three semaphores, one per buffer


def test_the_pipeline_handoff_takes_an_id_no_kernel_of_a_stage_uses() -> None:
    """A stage's handoff semaphore is pending across the stage's ops: only SUMMA's third chunk buffer shares
    its id, and a SUMMA takes two buffers in a pipeline."""
    assert sems.HANDOFF == sems.SUMMA.ids("free_b")[sems.PIPELINE_DEPTH]
    assert sems.PIPELINE.groups[0].life is Life.PIPELINE
    for layout in sems.LAYOUTS:
        if layout is not sems.SUMMA:
            assert layout.width <= sems.HANDOFF, layout.family
    sems.check_handoff()
    with pytest.raises(ValueError, match="handoff"):
        sems.check_handoff((Layout("wide", (Group("a", sems.HANDOFF + 1, "a"),)),))
