"""Names of the product's images: ``<registry>/<component>:<tag>``, from one setting.

The registry setting (``--registry``, ``GEFYRA_ASYNC_REGISTRY``) is a registry host with a
repository prefix, e.g. ``registry.example.com:5000/team/gefyra-async``; the tag is the
package version. Values come from users, so they are checked before they reach Docker,
Kubernetes or a Dockerfile.
"""

from __future__ import annotations

import re
from typing import Literal

Component = Literal["cargo", "stowaway", "carrier"]
COMPONENTS: tuple[Component, ...] = ("cargo", "stowaway", "carrier")

# The distribution spec's grammar, lower-case path components; a host part may carry a port.
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*(?::[0-9]{{1,5}})?)"
_PATH = r"(?:[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)"
_REGISTRY = re.compile(rf"^{_HOST}(?:/{_PATH})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class ImageNameError(ValueError):
    """A registry or tag that cannot name an image; the message says what is wrong."""


def check_registry(value: str) -> str:
    """VALUE without a trailing '/', if it can prefix image names; else ImageNameError."""
    registry = value.strip().rstrip("/")
    if "://" in registry:
        raise ImageNameError(
            f"registry {value!r} must not have a scheme; give host[:port]/path, "
            "e.g. registry.example.com/team/gefyra-async"
        )
    if not registry or len(registry) > 200 or not _REGISTRY.fullmatch(registry):
        raise ImageNameError(
            f"registry {value!r} is not a registry host with an optional repository path "
            "(host[:port]/path, lower-case path), e.g. registry.example.com/team/gefyra-async"
        )
    return registry


def tag_of(version: str) -> str:
    """The image tag of a package version (a '+local' part becomes '-local')."""
    tag = version.replace("+", "-")
    if not _TAG.fullmatch(tag):
        raise ImageNameError(f"version {version!r} cannot be an image tag")
    return tag


def image_ref(registry: str, component: Component, version: str) -> str:
    return f"{check_registry(registry)}/{component}:{tag_of(version)}"
