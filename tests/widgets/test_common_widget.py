"""Layer pickers shared by the docks: the user's painting before ground truth and outputs."""

import numpy as np

from napari_brainfeatures._napari.reader import TRUTH_KEY
from napari_brainfeatures._widgets.train import TrainWidget


def test_labels_picker_prefers_the_users_painting(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((2, 32, 32), np.uint8), name="image")
    truth = viewer.add_labels(
        np.zeros((2, 32, 32), np.uint8), name="areas (truth)", metadata={TRUTH_KEY: True}
    )
    w = TrainWidget(viewer)
    assert w.area_labels.value is truth  # nothing else to pick yet
    owned = {"brainfeatures_owner": "Train CNN"}
    viewer.add_labels(np.zeros((2, 32, 32), np.uint8), name="predicted areas", metadata=owned)
    assert w.area_labels.value is truth  # a dock's output never takes the picker
    painted = viewer.add_labels(np.zeros((2, 32, 32), np.uint8), name="my areas")
    assert w.area_labels.value is painted  # the user's painting replaces ground truth
    assert TrainWidget(viewer).area_labels.value is painted  # a new dock starts there too
    again = viewer.add_labels(np.zeros((2, 32, 32), np.uint8), name="second painting")
    assert again is not None and w.area_labels.value is painted  # a user choice stays
