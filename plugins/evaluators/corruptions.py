"""CIFAR-10-C corruptions (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations", ICLR 2019), generated with numpy, scipy and Pillow.

The severity parameters are those of the CIFAR-10 script of the authors' release
(``make_cifar_c.py``); the implementations are this module's own, batched over images, with
scipy and Pillow in place of OpenCV, scikit-image and ImageMagick. Left out: ``motion_blur``
and ``snow`` (they need ImageMagick's motion blur) and ``frost`` (it blends in the release's
frost photographs); the official files have them.

Every corruption maps a uint8 batch (N, 32, 32, 3) to a new one and draws its randomness from
the seed it is given, nothing else. As in make_cifar_c.py, float results in [0, 1] become
uint8 by truncation (``np.uint8(x * 255)``), not rounding.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

from harness.errors import unknown_name

SIZE = 32
SEVERITY_LEVELS = (1, 2, 3, 4, 5)
# the 19 corruptions of the official release, in the order of make_cifar_c.py
OFFICIAL_CORRUPTIONS = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)
RELEASE_ONLY = ("motion_blur", "snow", "frost")


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def _blur(x: np.ndarray, sigma: float, mode: str = "nearest") -> np.ndarray:
    """scikit-image's ``gaussian`` (truncated at 4 sigma) over the two image axes of a batch;
    a trailing channel axis, when there is one, is left alone."""
    sigmas = (0, sigma, sigma) + (0,) * (x.ndim - 3)
    return ndimage.gaussian_filter(x, sigma=sigmas, mode=mode, truncate=4.0)


# ---------------------------------------------------------------- noise
def _gaussian_noise(x, sigma, rng):
    return x + rng.normal(scale=sigma, size=x.shape)


def _shot_noise(x, photons, rng):
    return rng.poisson(x * photons) / photons


def _impulse_noise(x, amount, rng):
    # salt and pepper on every value (each channel on its own), half of the hits salt
    hit = rng.random(x.shape) < amount
    salt = rng.random(x.shape) < 0.5
    return np.where(hit, salt.astype(x.dtype), x)


def _speckle_noise(x, sigma, rng):
    return x + x * rng.normal(scale=sigma, size=x.shape)


# ---------------------------------------------------------------- blur
def _gaussian_blur(x, sigma, rng):
    return _blur(x, sigma)


def _glass_blur(x, params, rng):
    sigma, passes = params
    x = np.floor(_blur(x, sigma) * 255) / 255  # make_cifar_c.py goes through uint8 here
    # make_cifar_c.py means to swap each pixel of rows and columns 2..31 with a random neighbour
    # (offsets drawn from {-1, 0}), visiting them in descending order. Its tuple "swap" of numpy
    # views copies the neighbour into the pixel and leaves the neighbour as it was; the released
    # data was made so, and that is reproduced. Such a neighbour is never one the descending loop
    # has already visited, so a whole pass is one gather from the image as it was before the pass.
    n, inner = len(x), np.arange(2, SIZE)
    for _ in range(passes):
        dy, dx = rng.integers(-1, 1, size=(2, n, inner.size, inner.size))
        x[:, 2:, 2:] = x[np.arange(n)[:, None, None], inner[:, None] + dy, inner[None, :] + dx]
    return _blur(x, sigma)


def _disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """make_cifar_c.py's antialiased disk: a 17x17 aliased disk of that radius smoothed by a
    3x3 Gaussian, cropped to where it is non-zero (a few pixels at CIFAR radii), which keeps
    the filter cheap and changes nothing."""
    span = np.arange(-8, 9)
    yy, xx = np.meshgrid(span, span, indexing="ij")
    disk = (xx ** 2 + yy ** 2 <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    taps = np.exp(-np.arange(-1, 2) ** 2 / (2 * alias_blur ** 2))
    taps /= taps.sum()
    kernel = ndimage.correlate1d(ndimage.correlate1d(disk, taps, axis=0, mode="mirror"), taps, axis=1, mode="mirror")
    support = np.flatnonzero(kernel.any(axis=0))
    return kernel[support[0]:support[-1] + 1, support[0]:support[-1] + 1]


def _defocus_blur(x, params, rng):
    # OpenCV's filter2D: correlation with reflect-101 borders (scipy's "mirror")
    return ndimage.correlate(x, _disk_kernel(*params)[None, :, :, None], mode="mirror")


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """The centre of each image zoomed by ``factor`` as scipy's bilinear ``zoom`` does it,
    cropped back to 32x32. Bilinear zoom is separable: one interpolation matrix (scipy's zoom
    of an identity matrix) applied to rows and columns is the same and much faster on a batch."""
    crop = int(np.ceil(SIZE / factor))
    top = (SIZE - crop) // 2
    interpolate = ndimage.zoom(np.eye(crop, dtype=x.dtype), (factor, 1), order=1)
    trim = (len(interpolate) - SIZE) // 2
    interpolate = interpolate[trim:trim + SIZE]
    return np.einsum("ij,njkc,lk->nilc", interpolate, x[:, top:top + crop, top:top + crop], interpolate,
                     optimize=True)


def _zoom_blur(x, stop, rng):
    # np.arange(1, stop, 0.01) exactly as make_cifar_c.py has it: its float steps give
    # 7, 12, 16, 21 and 26 zoom factors at severities 1..5
    factors = np.arange(1, stop, 0.01)
    x = x.astype(np.float32)
    return (x + sum(_clipped_zoom(x, f) for f in factors)) / (len(factors) + 1)


# ---------------------------------------------------------------- weather
def _plasma_fractal(n: int, roughness_decay: float, rng) -> np.ndarray:
    """``n`` 32x32 height maps in [0, 1] by the diamond-square algorithm (make_cifar_c.py's
    ``plasma_fractal``, batched)."""
    maps = np.zeros((n, SIZE, SIZE))
    step, wibble = SIZE, 100.0

    def jitter(total, wibble):
        # the mean of four neighbours plus noise, which make_cifar_c.py scales by wibble twice
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + np.roll(corners, -1, axis=1)
        squares = squares + np.roll(squares, -1, axis=2)
        maps[:, half::step, half::step] = jitter(squares, wibble)
        centres = maps[:, half::step, half::step]
        maps[:, ::step, half::step] = jitter(
            centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2), wibble)
        maps[:, half::step, ::step] = jitter(
            centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1), wibble)
        step = half
        wibble /= roughness_decay
    maps -= maps.min(axis=(1, 2), keepdims=True)
    return maps / maps.max(axis=(1, 2), keepdims=True)


def _fog(x, params, rng):
    thickness, roughness_decay = params
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    x = x + thickness * _plasma_fractal(len(x), roughness_decay, rng)[..., None]
    return x * peak / (peak + thickness)


def _canny(images: np.ndarray, low: float, high: float) -> np.ndarray:
    """Edges of uint8 images (N, H, W) as OpenCV's ``Canny`` finds them (3x3 Sobel, L1
    gradient magnitude, non-maximum suppression, hysteresis with 8-connectivity)."""
    img = images.astype(np.float64)
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64)
    gx = ndimage.correlate(img, sobel[None], mode="nearest")
    gy = ndimage.correlate(img, sobel.T[None], mode="nearest")
    magnitude = np.abs(gx) + np.abs(gy)
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))

    def neighbour(dr, dc):
        return padded[:, 1 + dr:padded.shape[1] - 1 + dr, 1 + dc:padded.shape[2] - 1 + dc]

    # the gradient direction, quantised to horizontal, vertical or one of the diagonals
    ax, ay = np.abs(gx), np.abs(gy)
    horizontal = ay < ax * np.tan(np.pi / 8)
    vertical = ay > ax * np.tan(3 * np.pi / 8)
    same_sign = gx * gy >= 0
    peak = np.where(
        horizontal, (magnitude > neighbour(0, -1)) & (magnitude >= neighbour(0, 1)),
        np.where(vertical, (magnitude > neighbour(-1, 0)) & (magnitude >= neighbour(1, 0)),
                 np.where(same_sign, (magnitude > neighbour(-1, -1)) & (magnitude > neighbour(1, 1)),
                          (magnitude > neighbour(-1, 1)) & (magnitude > neighbour(1, -1)))))
    weak = peak & (magnitude > low)
    strong = weak & (magnitude > high)
    eight_connected_per_image = np.zeros((3, 3, 3), dtype=bool)
    eight_connected_per_image[1] = True
    labels, _ = ndimage.label(weak, structure=eight_connected_per_image)
    return np.isin(labels, np.unique(labels[strong]))


def _equalize_hist(image: np.ndarray) -> np.ndarray:
    """OpenCV's ``equalizeHist`` of one uint8 image."""
    hist = np.bincount(image.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == image.size:
        return np.full_like(image, first)
    lut = np.rint((np.cumsum(hist) - hist[first]) * (255 / (image.size - hist[first])))
    return np.clip(lut, 0, 255).astype(np.uint8)[image]


def _spatter(x, params, rng):
    loc, scale, sigma, threshold, strength, mud = params
    n = len(x)
    x = x.astype(np.float32)
    liquid = _blur(rng.normal(loc=loc, scale=scale, size=(n, SIZE, SIZE)), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        # mud brown blobs where the liquid layer is thick
        blobs = _blur((liquid > threshold).astype(np.float32), strength)
        blobs[blobs < 0.8] = 0
        colour = np.array([63, 42, 20], dtype=np.float32) / 255
        return x * (1 - blobs[..., None]) + colour * blobs[..., None]
    # water: pale turquoise, shaded by the distance to the edges of the liquid layer
    liquid8 = (np.clip(liquid, 0, 1) * 255).astype(np.uint8)
    edges = _canny(liquid8, 50, 150)
    shade = np.full((n, SIZE, SIZE), 20.0)
    for i in np.flatnonzero(edges.any(axis=(1, 2))):
        shade[i] = np.minimum(ndimage.distance_transform_edt(~edges[i]), 20)
    shade = ndimage.uniform_filter(shade, size=(1, 3, 3), mode="mirror").astype(np.uint8)
    shade = np.stack([_equalize_hist(s) for s in shade])
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    shade = np.clip(ndimage.correlate(shade.astype(np.int32), emboss[None], mode="mirror"), 0, 255)
    shade = ndimage.uniform_filter(shade.astype(np.float32), size=(1, 3, 3), mode="mirror")
    layer = liquid8 * shade
    top = layer.max(axis=(1, 2), keepdims=True)
    layer = np.divide(layer, top, out=np.zeros_like(layer), where=top > 0) * strength
    colour = np.array([175, 238, 238], dtype=np.float32) / 255
    return x + layer[..., None] * colour


# ---------------------------------------------------------------- digital
def _rgb_to_hsv(x: np.ndarray) -> np.ndarray:
    value = x.max(-1)
    delta = value - x.min(-1)
    saturation = np.divide(delta, value, out=np.zeros_like(value), where=value > 0)
    r, g, b = np.moveaxis(x, -1, 0)
    d = np.where(delta > 0, delta, 1)
    hue = np.select([delta == 0, r == value, g == value], [0, (g - b) / d, 2 + (b - r) / d], 4 + (r - g) / d)
    return np.stack([(hue / 6) % 1, saturation, value], axis=-1)


def _hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    h, s, v = np.moveaxis(hsv, -1, 0)
    sector = np.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    # (r, g, b) in each of the six hue sectors
    rgb_by_sector = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    sector = sector.astype(np.int64) % 6
    return np.stack([np.choose(sector, [rgb[c] for rgb in rgb_by_sector]) for c in range(3)], axis=-1)


def _brightness(x, shift, rng):
    hsv = _rgb_to_hsv(x)
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0, 1)
    return _hsv_to_rgb(hsv)


def _saturate(x, params, rng):
    scale, shift = params
    hsv = _rgb_to_hsv(x)
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0, 1)
    return _hsv_to_rgb(hsv)


def _contrast(x, factor, rng):
    means = x.mean(axis=(1, 2), keepdims=True)
    return (x - means) * factor + means


def _per_image(x: np.ndarray, transform) -> np.ndarray:
    """Applies a PIL image -> PIL image ``transform`` to each image of a float batch."""
    return np.stack([np.asarray(transform(Image.fromarray(image))) for image in _to_uint8(x)]) / 255


def _jpeg_compression(x, quality, rng):
    def recompress(image):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality)
        return Image.open(buffer)

    return _per_image(x, recompress)


def _pixelate(x, factor, rng):
    side = int(SIZE * factor)
    return _per_image(x, lambda image: image.resize((side, side), Image.Resampling.BOX)
                      .resize((SIZE, SIZE), Image.Resampling.BOX))


def _sample(images: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear samples of every channel of image i at (rows[i], cols[i]), each (N, H, W)."""
    n, h, w, c = images.shape
    coords = np.broadcast_arrays(np.arange(n)[:, None, None, None], rows[..., None], cols[..., None],
                                 np.arange(c)[None, None, None, :])
    return ndimage.map_coordinates(images, np.stack(coords), order=1, mode=mode)


def _elastic_transform(x, params, rng):
    # displacement size and smoothness of the elastic field, and the affine jitter, in pixels
    alpha, sigma, jitter = (SIZE * p for p in params)
    n = len(x)
    x = x.astype(np.float32)
    # a random affine map: the corners of a central triangle, (x, y) pixels, moved by up to `jitter`
    centre, third = SIZE // 2, SIZE // 3
    corners = np.array([[centre + third, centre + third], [centre + third, centre - third],
                        [centre - third, centre - third]], dtype=np.float64)
    moved = corners + rng.uniform(-jitter, jitter, size=(n, 3, 2))
    # the affine map from output pixels to input pixels: [x_out, y_out, 1] @ to_input = [x_in, y_in]
    to_input = np.linalg.solve(np.concatenate([moved, np.ones((n, 3, 1))], axis=2),
                               np.broadcast_to(corners, (n, 3, 2)))
    rows, cols = np.meshgrid(np.arange(SIZE), np.arange(SIZE), indexing="ij")
    grid = np.stack([cols, rows, np.ones_like(rows)], axis=-1).astype(np.float64)
    source = np.einsum("hwk,nkj->nhwj", grid, to_input)
    # OpenCV's warpAffine with reflect-101 borders (scipy's "mirror")
    warped = _sample(x, source[..., 1], source[..., 0], mode="mirror")
    dx, dy = (ndimage.gaussian_filter(rng.uniform(-1, 1, size=(n, SIZE, SIZE)), sigma=(0, sigma, sigma),
                                      mode="reflect", truncate=3) * alpha for _ in range(2))
    return _sample(warped, rows + dy, cols + dx, mode="reflect")


# name -> (function, its parameters at severities 1..5), as in make_cifar_c.py
CORRUPTIONS = {
    "gaussian_noise": (_gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
    "shot_noise": (_shot_noise, (500, 250, 100, 75, 50)),
    "impulse_noise": (_impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
    "speckle_noise": (_speckle_noise, (0.06, 0.1, 0.12, 0.16, 0.2)),
    "defocus_blur": (_defocus_blur, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))),
    "gaussian_blur": (_gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1)),
    # (sigma, passes); make_cifar_c.py's third parameter, the largest shift, is 1 at every severity
    "glass_blur": (_glass_blur, ((0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2))),
    "zoom_blur": (_zoom_blur, (1.06, 1.11, 1.16, 1.21, 1.26)),
    "fog": (_fog, ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))),
    "spatter": (_spatter, ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                           (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                           (0.65, 0.1, 0.5, 0.68, 0.6, 1))),
    "brightness": (_brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
    "contrast": (_contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
    "saturate": (_saturate, ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))),
    "jpeg_compression": (_jpeg_compression, (80, 65, 58, 50, 40)),
    "pixelate": (_pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
    # (alpha, sigma, affine jitter) as fractions of the image size
    "elastic_transform": (_elastic_transform, ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                               (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
}


def parameters(name: str, severity: int):
    """The make_cifar_c.py parameters of a corruption at a severity (1..5)."""
    if name not in CORRUPTIONS:
        raise unknown_name("corruption", name, CORRUPTIONS)
    if severity not in SEVERITY_LEVELS:
        raise ValueError(f"severity {severity} is not one of {SEVERITY_LEVELS}")
    return CORRUPTIONS[name][1][severity - 1]


def corrupt(images: np.ndarray, name: str, severity: int, seed: int) -> np.ndarray:
    """``images`` (uint8, N x 32 x 32 x 3) with the corruption ``name`` at ``severity`` (1..5);
    random draws come from ``seed`` alone."""
    params = parameters(name, severity)
    if images.dtype != np.uint8 or images.shape[1:] != (SIZE, SIZE, 3):
        raise ValueError(f"corrupt wants uint8 images of shape (N, {SIZE}, {SIZE}, 3), not {images.dtype} "
                         f"{images.shape}")
    return _to_uint8(CORRUPTIONS[name][0](images / 255.0, params, np.random.default_rng(seed)))
