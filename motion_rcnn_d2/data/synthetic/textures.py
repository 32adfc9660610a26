"""Procedural textures of the synthetic world: smooth sums of sinusoids fixed to a surface.

A texture maps surface coordinates q (metres, D = 2 for a plane, D = 3 for a box's own
coordinates) to a colour (RGB, grey levels 0..255):

    colour(q) = base + sum_m w_m sin(k_m . q + phi_m)        (P, 3)

with wave vectors k_m (rad/m), phases phi_m and colour weights w_m (3 grey levels each).
The colour depends on the surface point only: no lighting, no view-dependent shading, so a
point keeps its brightness from frame to frame (brightness constancy holds exactly and the
photometric check of the generated flow is meaningful).

Wavelengths are drawn per axis (lambda_d in metres, k_d = +-2 pi / lambda_d) so that
textures can be made smooth along an axis that perspective compresses (the ground's depth
direction): bilinear interpolation of a rendered image is then accurate, which the
photometric check needs.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["WaveTexture", "sample_wave_texture"]


@dataclass
class WaveTexture:
    """colour(q) = base + sum_m weights[m] sin(wave_vectors[m] . q + phases[m]).

    Attributes:
        base: (3,) RGB grey levels.
        wave_vectors: (M, D) rad/m.
        phases: (M,) radians.
        weights: (M, 3) RGB grey levels per wave.
    """

    base: np.ndarray
    wave_vectors: np.ndarray
    phases: np.ndarray
    weights: np.ndarray

    def colour(self, coords):
        """Evaluate the texture.

        Args:
            coords: (P, D) surface coordinates in metres.
        Returns:
            (P, 3) float64 RGB grey levels (not clipped).
        """
        coords = np.asarray(coords, dtype=np.float64)
        waves = np.sin(coords @ self.wave_vectors.T + self.phases)  # (P, M)
        return self.base + waves @ self.weights


def sample_wave_texture(rng, base, wavelengths, amplitude, num_waves, tint=0.35):
    """Draw a WaveTexture.

    Each wave m gets, for every axis d, a wavelength lambda_d log-uniform in
    wavelengths[d] = (min, max) metres (None = constant along that axis) and a random sign;
    k_{m,d} = +-2 pi / lambda_d. Its colour weight is amplitude * (1 + tint * n), n ~ N(0, 1)
    per RGB channel (mostly brightness, a little colour), and its phase is uniform.

    Args:
        rng: numpy Generator.
        base: (3,) RGB grey levels.
        wavelengths: sequence of D entries, each (min, max) metres or None.
        amplitude: grey levels per wave.
        num_waves: M.
        tint: relative colour variation of the weights.
    Returns:
        WaveTexture with D-dimensional wave vectors.
    """
    dims = len(wavelengths)
    vectors = np.zeros((num_waves, dims))
    for d, bounds in enumerate(wavelengths):
        if bounds is None:
            continue
        low, high = np.log(bounds[0]), np.log(bounds[1])
        lam = np.exp(rng.uniform(low, high, size=num_waves))
        vectors[:, d] = rng.choice([-1.0, 1.0], size=num_waves) * 2.0 * np.pi / lam
    phases = rng.uniform(0.0, 2.0 * np.pi, size=num_waves)
    weights = amplitude * (1.0 + tint * rng.standard_normal((num_waves, 3)))
    return WaveTexture(np.asarray(base, dtype=np.float64), vectors, phases, weights)
