"""Label tables (dict, FreeSurfer LUT, ITK-SNAP description) and distinct default colours; the viewer uses them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wirehead.labels import LabelTable, default_colour, distinct_colours, load_label_table

FREESURFER = """\
#$Id: FreeSurferColorLUT.txt,v 1.105 2015/07/29 18:26:22 greve Exp $

#No. Label Name:                            R   G   B   A

0   Unknown                                 0   0   0   0
2   Left-Cerebral-White-Matter              245 245 245 0
3   Left-Cerebral-Cortex                    205 62  78  0
10  Left-Thalamus                           0   118 14  0
43  Right-Lateral-Ventricle                 120 18  134 0
50  Right-Caudate                           122 186 220 0
"""

ITKSNAP = """\
################################################
# ITK-SnAP Label Description File
# File format:
# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL
# Fields:
#    IDX:   Zero-based index
################################################
    0     0    0    0        0  0  0    "Clear Label"
    1   255    0    0        1  1  1    "Label 1 # with a hash"
   17    0  255    0        1  1  1    "Left hippocampus"
"""


def test_a_freesurfer_lut_gives_names_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "FreeSurferColorLUT.txt"
    path.write_text(FREESURFER)
    table = load_label_table(path)
    assert table.names[3] == "Left-Cerebral-Cortex" and table.names[43] == "Right-Lateral-Ventricle"
    assert table.colours[3] == (205, 62, 78) and table.colours[43] == (120, 18, 134)
    assert table.colours_for([0, 3, 43]) == {3: (205, 62, 78), 43: (120, 18, 134)}
    assert "FreeSurfer" in table.source


def test_an_itksnap_label_description_gives_names_and_colours(tmp_path: Path) -> None:
    path = tmp_path / "labels.txt"
    path.write_text(ITKSNAP)
    table = load_label_table(path)
    assert table.names == {0: "Clear Label", 1: "Label 1 # with a hash", 17: "Left hippocampus"}
    assert table.colours[17] == (0, 255, 0) and "ITK-SNAP" in table.source


def test_a_dict_table_and_its_errors(tmp_path: Path) -> None:
    table = load_label_table({1: "csf", "2": ("grey", (1, 2, 3))})
    assert table.names == {1: "csf", 2: "grey"} and table.colours == {2: (1, 2, 3)}
    assert table.name(0) == "background" and table.name(7) == "label 7"
    with pytest.raises(ValueError, match="0..255"):
        load_label_table({1: ("x", (0, 0, 300))})
    bad = tmp_path / "bad.txt"
    bad.write_text("1 cortex 1 2\n")
    with pytest.raises(ValueError, match="line 1"):
        load_label_table(bad)
    with pytest.raises(FileNotFoundError, match="ColorLUT"):
        load_label_table(tmp_path / "missing.txt")


def test_default_colours_are_distinct_for_any_number_of_labels() -> None:
    assert default_colour(3) != default_colour(43) and default_colour(10) != default_colour(50)
    for values in (range(1, 21), range(1, 300), [3, 43, 10, 50, 1000, 2035, 65535], range(1, 2500)):
        colours = distinct_colours(values)
        assert len(set(colours.values())) == len(colours) == len(set(values)), len(colours)
        assert (0, 0, 0) not in colours.values()
    # a table's colour is kept; a default that clashes with it moves on
    clash = distinct_colours([1, 2], {2: default_colour(1)})
    assert clash[2] == default_colour(1) and clash[1] != clash[2]
    assert distinct_colours([5, 9, 3]) == distinct_colours([3, 9, 5])  # the set decides, not the order


def test_the_brains_ship_their_table() -> None:
    pytest.importorskip("torch")
    from wirehead import brains

    assert brains.LABEL_TABLE.names == brains.LABELS
    assert len(set(brains.LABEL_TABLE.colours_for([1, 2, 3]).values())) == 3


def test_the_viewer_colours_labels_from_a_table_and_hides_them_one_by_one(tmp_path: Path) -> None:
    pytest.importorskip("anywidget")
    from wirehead.notebook import SliceViewer

    image = np.linspace(0, 1, 20 * 20 * 10, dtype=np.float32).reshape(20, 20, 10)
    label = np.zeros((20, 20, 10), np.int16)
    label[2:8] = 3
    label[10:16] = 43
    label[16:] = 10
    plain = SliceViewer(arrays={"image": image, "label": label}, opacity=1.0)
    assert plain._label_colors["3"] != plain._label_colors["43"]  # a 20-colour cycle gave them one colour
    axial = plain.rendered["axial"]  # display: x to the right, so column x is voxel x
    assert tuple(axial[5, 4]) == tuple(plain._label_colors["3"]) and tuple(axial[5, 12]) != tuple(axial[5, 4])
    path = tmp_path / "FreeSurferColorLUT.txt"
    path.write_text(FREESURFER)
    v = SliceViewer(arrays={"image": image, "label": label}, label_table=path, label_names={10: "thalamus"},
                    opacity=1.0)
    v.crosshair = False
    assert v._label_colors["43"] == [120, 18, 134] and v.label_names["43"] == "Right-Lateral-Ventricle"
    assert v.label_names["10"] == "thalamus"  # label_names win over the table
    rgb = v.rendered["axial"]
    assert tuple(rgb[5, 12]) == (120, 18, 134) and tuple(rgb[5, 4]) == (205, 62, 78)
    v.sagittal, v.coronal, v.axial = 12, 5, 5
    assert "Right-Lateral-Ventricle (43)" in v.readout
    v.hidden_labels = [43]
    hidden = v.rendered["axial"]
    assert tuple(hidden[5, 4]) == (205, 62, 78) and tuple(hidden[5, 12]) != (120, 18, 134)
    assert np.array_equal(hidden[:, :10], rgb[:, :10])
    assert isinstance(load_label_table(None), LabelTable)
