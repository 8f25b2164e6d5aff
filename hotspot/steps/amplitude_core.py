"""Amplitude cores: split a cluster that holds a hotspot among many pixels of noise.

tskm labels the band-passed series after z-scoring, so a weak hotspot and the noise pixels
around it whose band-passed noise happens to look like the same centroid share a temporal
cluster, and DBSCAN joins them into one spatial cluster several times the hotspot's size
(medium hard scene, seed 0: the 78- and 152-pixel seasonal twins inside clusters of 594
and 430 pixels, the 53-pixel transient inside 131). The cluster's mean contrast is diluted
below the significance level and the hotspot is lost. What z-scoring threw away tells them
apart: the amplitude of the band-passed series.

  amplitude a_i   RMS over time of pixel i's band-passed series (hotspotFiltered.h5, the
                  series tskm clustered) minus its mean;
  smoothed s_i    mean of a over the pixels of i's own cluster within SMOOTH_SPACING pixel
                  spacings (own cluster only, so a core does not bleed across its edge);
  z_i             (s_i - median s) / (1.4826 MAD s) over every measured pixel (label >= 0:
                  label 0 smoothed among themselves): most pixels are background, so the
                  median and MAD describe the noise, also where a classifier left most of
                  the scene without a cluster;
  core            hysteresis threshold: the pixels of one cluster with z >= LOW_Z, connected
                  (within CONNECT_SPACING spacings), holding at least one pixel with
                  z >= PEAK_Z and at least minPixel pixels, become a cluster of their own;
                  the rest of the cluster keeps its id (a core that is the whole cluster
                  changes nothing).

Measured on the medium scenes (docs/quality.md): the cores of the 40 true hotspots of hard
seeds 0-3 peak at z 8.3 - 36; cores of noise at z <= 5.3 on seeds 0 / 1 and 6.1 on the easy
scene, hence PEAK_Z = 7 (the simulator's unwrapping-error patches reach z 8 - 150: they
are caught by the unwrapping-error check, which runs on the whole clusters before the
split). The core's own contrast is then tested like any cluster, but not against the
empirical null of whole clusters (dispersion docstring): the core was selected for its
amplitude, the peak z is its gate.

Memory: per measured pixel its neighbour pairs within SMOOTH_SPACING (about 10 a pixel on a
grid, 16 bytes each); the filtered stack is read once, in blocks.
"""
import warnings

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from hotspot.utils.errors import HotspotError
from hotspot.utils.h5io import open_h5, require_dataset
from hotspot.utils.stack import block_size, iter_blocks

SMOOTH_SPACING = 2.5
CONNECT_SPACING = 1.5
LOW_Z = 2.0
PEAK_Z = 7.0
MAD_TO_STD = 1.4826


def pixel_amplitude(filtered_file, num_pixel, max_memory):
    """RMS over time of each pixel's band-passed series minus its mean (m); NaN-aware."""
    with open_h5(filtered_file) as f:
        dset = require_dataset(f, "displacement", filtered_file)
        if dset.ndim != 2 or dset.shape[0] != num_pixel:
            raise HotspotError(f"{filtered_file}: displacement has shape {dset.shape}, expected "
                               f"({num_pixel}, epochs) like the stack; re-run the tskm step")
        out = np.full(num_pixel, np.nan)
        size = block_size(dset.shape[1], max_memory, bytes_per_value=8, copies=3)
        for start, stop in iter_blocks(num_pixel, size):
            block = dset[start:stop].astype(np.float64)
            # an all-NaN row (pixel never measured after filtering) stays NaN
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                centred = block - np.nanmean(block, axis=1, keepdims=True)
                out[start:stop] = np.sqrt(np.nanmean(centred ** 2, axis=1))
    return out


def _same_label_pairs(x, y, labels, radius):
    """(i, j) pairs (i < j) of points within radius that share a label."""
    pairs = cKDTree(np.c_[x, y]).query_pairs(radius, output_type="ndarray")
    if not pairs.size:
        return np.zeros((0, 2), dtype=np.int64)
    return pairs[labels[pairs[:, 0]] == labels[pairs[:, 1]]]


def amplitude_z(x, y, labels, amplitude, spacing):
    """Robust z of the amplitude smoothed over each pixel's own cluster (module docstring;
    the pixels without a cluster, label 0, are smoothed among themselves); NaN for pixels
    without a measurement (label -1) or an amplitude."""
    labels = np.asarray(labels)
    z = np.full(labels.size, np.nan)
    idx = np.nonzero((labels >= 0) & np.isfinite(amplitude))[0]
    if idx.size < 2:
        return z
    pairs = _same_label_pairs(x[idx], y[idx], labels[idx], SMOOTH_SPACING * spacing)
    n = idx.size
    adj = sparse.coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])),
                            shape=(n, n)).tocsr()
    adj = adj + adj.T + sparse.identity(n, format="csr")
    smooth = (adj @ amplitude[idx]) / np.asarray(adj.sum(axis=1)).ravel()
    centre = np.median(smooth)
    scale = MAD_TO_STD * np.median(np.abs(smooth - centre))
    if not scale > 0:
        return z
    z[idx] = (smooth - centre) / scale
    return z


def _components(x, y, labels, idx, radius):
    """(number, component of each pixel of idx): the pixels idx joined within radius when they
    share a label (scipy's connected components of that graph)."""
    pairs = _same_label_pairs(x[idx], y[idx], labels[idx], radius)
    graph = sparse.coo_matrix((np.ones(pairs.shape[0]), (pairs[:, 0], pairs[:, 1])),
                              shape=(idx.size, idx.size))
    return connected_components(graph, directed=False)


def split_cores(labels, split_ids, x, y, z, spacing, min_pixel):
    """(new labels, {core id: parent id}): the cores of the clusters split_ids get new ids
    after labels.max(), in order of parent id then first pixel; see module docstring."""
    labels = np.asarray(labels, dtype=np.int64)
    cand = np.isin(labels, np.asarray(split_ids, dtype=np.int64)) & (np.nan_to_num(z) >= LOW_Z)
    idx = np.nonzero(cand)[0]
    if idx.size < min_pixel:
        return labels, {}
    num_comp, comp = _components(x, y, labels, idx, CONNECT_SPACING * spacing)
    size = np.bincount(comp, minlength=num_comp)
    peak = np.full(num_comp, -np.inf)
    np.maximum.at(peak, comp, z[idx])
    first = np.full(num_comp, idx.size)
    np.minimum.at(first, comp, np.arange(idx.size))
    comp_label = labels[idx[first]]
    ids, whole = np.unique(labels[labels > 0], return_counts=True)
    # a core that is its whole cluster changes nothing: the cluster keeps its id
    is_whole = size == whole[np.searchsorted(ids, comp_label)]
    keep = np.nonzero((size >= min_pixel) & (peak >= PEAK_Z) & ~is_whole)[0]
    if not keep.size:
        return labels, {}
    parent = comp_label[keep]
    keep = keep[np.lexsort((first[keep], parent))]
    new_id = np.zeros(num_comp, dtype=np.int64)
    new_id[keep] = labels.max() + 1 + np.arange(keep.size)
    out = labels.copy()
    in_core = new_id[comp] > 0
    out[idx[in_core]] = new_id[comp[in_core]]
    return out, {int(new_id[c]): int(comp_label[c]) for c in keep}


def core_fraction(x, y, labels, ids, z, spacing):
    """Per cluster of ids (sorted): the share of its pixels in its largest connected patch of
    high band-passed amplitude (z >= LOW_Z, pixels of the cluster joined within
    SMOOTH_SPACING spacings, the scale z was smoothed over); NaN where z is unknown
    everywhere in the cluster.

    A hotspot is one such patch, or mostly: on the family tuning scenes (seeds 0-11 and null
    0-5) every true hotspot had >= 0.54 of its pixels in one patch (most > 0.8), while the
    large background clusters reported as hotspots (1,500-6,700 pixels, null scenes
    included) had 0.18-0.46: their high-amplitude pixels are scattered (single pixels
    unwrapped wrong, turbulence) and their contrast is the sum of many unrelated bits
    (docs/quality.md)."""
    labels = np.asarray(labels, dtype=np.int64)
    ids = np.asarray(ids, dtype=np.int64)
    out = np.full(ids.size, np.nan)
    labelled = np.nonzero(labels > 0)[0]
    known = labelled[np.isfinite(z[labelled])]
    row_known = np.searchsorted(ids, labels[known])
    has_z = np.bincount(row_known, minlength=ids.size) > 0
    out[has_z] = 0.0
    idx = known[z[known] >= LOW_Z]
    if not idx.size:
        return out
    _, comp = _components(x, y, labels, idx, SMOOTH_SPACING * spacing)
    size = np.bincount(comp)
    row = np.searchsorted(ids, labels[idx])
    largest = np.zeros(ids.size)
    np.maximum.at(largest, row, size[comp])
    total = np.bincount(np.searchsorted(ids, labels[labelled]), minlength=ids.size)
    out[has_z] = largest[has_z] / total[has_z]
    return out
