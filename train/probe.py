"""The linear probe: a pretrained model's new head fitted on the frozen backbone's features, before
any fine-tuning (LP-FT, Kumar et al. 2022).

A head trained by gradient descent together with a slowly unfrozen backbone starts from random
weights whose large early gradients damage the pretrained features; on a few hundred photos that
loses knowledge the backbone already had. Here every training photo (and its mirror image) goes
through the frozen backbone once, a softmax regression is fitted on those features with its L2
strength chosen by k-fold cross-validation on the training split (the validation split stays
untouched), and the result becomes the head fine-tuning starts from. Cost: one forward pass per
photo and a few seconds of numpy.
"""

from __future__ import annotations

import numpy as np

from .data import CachedSplit, split_dataset

# L2 strengths tried, on standardised features (the mean loss's gradient plus l2 * W).
L2_GRID = (1e-3, 1e-2, 1e-1)
FOLDS = 5
MAX_CV_PHOTOS = 3000  # cross-validation on a seeded sample beyond this: the choice needs no more
STEPS = 300


def frozen_features(model, split: CachedSplit, batch_size: int = 64, advance=None) -> tuple[np.ndarray, np.ndarray]:
    """The pooled backbone features of every image of ``split``, and of its mirror image."""
    batches = (x for x, _ in split_dataset(split, batch_size).as_numpy_iterator())
    return features_of_batches(model, batches, advance)


def features_of_batches(model, batches, advance=None) -> tuple[np.ndarray, np.ndarray]:
    """``model``'s pooled features (its layer ``gap``) of each batch of uint8 images, and of their mirror images."""
    import keras

    extractor = keras.Model(model.input, model.get_layer("gap").output)
    plain, mirrored = [], []
    for x in batches:
        x = x.astype(np.float32)
        plain.append(extractor(x, training=False).numpy())
        mirrored.append(extractor(x[:, :, ::-1], training=False).numpy())
        if advance is not None:
            advance(len(x))
    return np.concatenate(plain), np.concatenate(mirrored)


def fit_softmax(x: np.ndarray, y: np.ndarray, classes: int, l2: float, steps: int = STEPS) -> tuple[np.ndarray, np.ndarray]:
    """Softmax regression by full-batch Adam: weights (features x classes) and biases."""
    w, b = np.zeros((x.shape[1], classes), np.float32), np.zeros(classes, np.float32)
    onehot = np.eye(classes, dtype=np.float32)[y]
    moments = [[np.zeros_like(w), np.zeros_like(w)], [np.zeros_like(b), np.zeros_like(b)]]
    for t in range(1, steps + 1):
        g = (softmax(x @ w + b) - onehot) / len(x)
        for param, grad, (m, v) in ((w, x.T @ g + l2 * w, moments[0]), (b, g.sum(0), moments[1])):
            m *= 0.9
            m += 0.1 * grad
            v *= 0.999
            v += 0.001 * grad * grad
            param -= 0.05 * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
    return w, b


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def cross_validate(x: np.ndarray, xm: np.ndarray, y: np.ndarray, classes: int, seed: int) -> dict[float, float]:
    """Mean held-out accuracy of each L2 strength over ``FOLDS`` stratified-by-shuffle folds
    (mirror images train with their photo; a held-out photo is judged on both views)."""
    rng = np.random.default_rng(seed)
    keep = rng.permutation(len(y))[:MAX_CV_PHOTOS]
    x, xm, y = x[keep], xm[keep], y[keep]
    fold = np.empty(len(y), np.int64)
    for c in range(classes):  # every class spread over the folds
        members = np.flatnonzero(y == c)
        fold[members] = np.arange(len(members)) % FOLDS
    scores = {}
    for l2 in L2_GRID:
        correct = 0
        for k in range(min(FOLDS, len(y))):
            tr, va = fold != k, fold == k
            if not va.any() or not tr.any():
                continue
            w, b = fit_softmax(np.concatenate([x[tr], xm[tr]]), np.concatenate([y[tr], y[tr]]), classes, l2)
            p = softmax(x[va] @ w + b) + softmax(xm[va] @ w + b)
            correct += int((p.argmax(1) == y[va]).sum())
        scores[l2] = correct / len(y)
    return scores


def linear_probe(model, train: CachedSplit, classes: int, seed: int, advance=None) -> dict:
    """Fit ``model``'s head (the Dense layer ``probs``) on its frozen features; returns what was
    chosen, for run.json: the L2 strength and each strength's cross-validated accuracy."""
    x, xm = frozen_features(model, train, advance=advance)
    return fit_head(model, x, xm, train.y, classes, seed)


def fit_head(model, x: np.ndarray, xm: np.ndarray, y: np.ndarray, classes: int, seed: int) -> dict:
    """``linear_probe`` on features already extracted (``x`` and the mirror images' ``xm``)."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    x, xm = (x - mean) / std, (xm - mean) / std
    scores = cross_validate(x, xm, y, classes, seed)
    l2 = max(scores, key=lambda k: (scores[k], k))  # ties: the stronger regularisation
    w, b = fit_softmax(np.concatenate([x, xm]), np.concatenate([y, y]), classes, l2)
    # Standardisation folded into the layer: (f - mean) / std @ w + b == f @ (w / std) + b'.
    kernel = (w / std[:, None]).astype(np.float32)
    bias = (b - (mean / std) @ w).astype(np.float32)
    model.get_layer("probs").set_weights([kernel, bias])
    return {"l2": l2, "cv_accuracy": {f"{k:g}": round(v, 4) for k, v in scores.items()}, "photos": int(len(x))}
