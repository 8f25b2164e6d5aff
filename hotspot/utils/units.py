"""The unit of every dataset hotspot writes, as MintPy does: a dataset attribute UNIT.

MintPy spells them 'm', 'm/year', '1' (dimensionless, also ids, counts and flags), ...; here
also 'km', 'km2', 'degrees', 'm^2', 'epoch' (an index into the file's date list) and 'day'.
Output HDF5 files are read by people with h5py / info.py, not only by the next step: a
velocity must say that it is in m/year while the exports give mm/yr.
"""

DATASET_UNITS = {
    # hotspotStack.h5, hotspotFiltered.h5 (per pixel, stack order)
    "displacement": "m",
    "velocity": "m/year",
    "velocityStd": "m/year",
    "coherence": "1",
    "incidenceAngle": "degrees",
    "latitude": "degrees",
    "longitude": "degrees",
    "row": "1",
    "col": "1",
    # covariogram.h5
    "distance": "km",
    "covariance": "m^2",
    "covarianceStd": "m^2",
    "modelCovariance": "m^2",
    "pairCount": "1",
    # label files (clusterTSKM / DBSCAN / LSTM / LSTMP / hotspot.h5)
    "label": "1",
    "hotspot": "1",
    "pixelLabel": "1",
    "probability": "1",
    "pixelProbability": "1",
    "pixelDistance": "1",              # tskm: (soft-)DTW of the normalised series
    "sampleIndex": "1",
    "silhouetteK": "1",
    "silhouetteScore": "1",
    "clusterSize": "1",
    "parentCluster": "1",
    "eps": "km",
    "minSamples": "1",
    "temporalEps": "km",
    "temporalMinSamples": "1",
    "temporalNumCluster": "1",
    "temporalMethod": "1",
    "agreementClusterId": "1",
    "agreementRecall": "1",
    # dispersion.h5 / hotspot.h5 table (one row per cluster / hotspot)
    "clusterId": "1",
    "hotspotId": "1",
    "coreParent": "1",
    "parentTemporalCluster": "1",
    "numPixel": "1",
    "numMerged": "1",
    "numPixelEffective": "1",
    "mergedCluster": "1",
    "areaKm2": "km2",
    "standardDistance": "km",
    "ellipseCenterLon": "degrees",
    "ellipseCenterLat": "degrees",
    "ellipseCenterX": "km",
    "ellipseCenterY": "km",
    "ellipseSemiMajor": "km",
    "ellipseSemiMinor": "km",
    "ellipseAngle": "degrees",
    "xyOrigin": "degrees",
    "meanVelocity": "m/year",
    "stdVelocity": "m/year",
    "minVelocity": "m/year",
    "maxVelocity": "m/year",
    "rmsVelocityStd": "m/year",
    "meanCoherence": "1",
    "meanTimeseries": "m",
    "p10Timeseries": "m",
    "p90Timeseries": "m",
    "ringTimeseries": "m",
    "ringPixel": "1",
    "signalRms": "m",
    "noiseLevel": "m",
    "signalRmsUnwrapCorrected": "m",
    "noiseLevelUnwrapCorrected": "m",
    "pValue": "1",
    "pValueUnwrapCorrected": "1",
    "pValueVelocity": "1",
    "pValueSpatial": "1",
    "pValueSpatialMC": "1",
    "qValue": "1",
    "pValueSpatialUnwrapCorrected": "1",
    "contrastDistance": "1",           # robust Mahalanobis distance of the contrast coefficients
    "numNullPlacement": "1",
    "clusterVelocity": "m/year",
    "ringVelocity": "m/year",
    "velocityContrast": "m/year",
    "peakAmplitudeZ": "1",
    "coreFraction": "1",
    "isCandidate": "1",
    "isSignificant": "1",
    "isSignificantVelocity": "1",
    "isUnwrapError": "1",
    "isHotspot": "1",
    "isQuantisedJump": "1",
    "unwrapStart": "epoch",
    "unwrapStop": "epoch",
    "unwrapJump": "m",
    "unwrapFraction": "1",
    "unwrapResidual": "m",
    "unwrapNumBox": "1",
    "haloOf": "1",
    "numNullEffective": "1",
    # trainLSTM.h5
    "index": "1",
    "testRandom": "1",
    "testBlock": "1",
    "classId": "1",
    "twinGroup": "1",
    "confusion": "1",
    "recall": "1",
    "count": "1",
    "loss": "1",
    "val_loss": "1",
    "accuracy": "1",
    "val_accuracy": "1",
}


def unit_of(name):
    """Unit of a dataset by its name (last path component), or None when unknown."""
    return DATASET_UNITS.get(str(name).rsplit("/", 1)[-1])


def set_units(group, units=None):
    """Give every dataset under an h5py group its UNIT attribute, unless it has one: from
    `units` ({name: unit}, for names whose unit depends on the file) or DATASET_UNITS."""
    units = units or {}

    def visit(name, obj):
        if hasattr(obj, "shape") and "UNIT" not in obj.attrs:
            base = name.rsplit("/", 1)[-1]
            unit = units.get(name, units.get(base, unit_of(base)))
            if unit is not None:
                obj.attrs["UNIT"] = unit

    group.visititems(visit)
