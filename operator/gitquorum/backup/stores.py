"""Opening an object store, with boto3 loaded only then.

boto3 and botocore cost about 8 MB resident in each process that imports them. An operator or a
replica that never takes a backup never needs them: the modules that only name a
:class:`location.Location` leave them alone, and the first store opened loads them.
"""

from typing import TYPE_CHECKING

from gitquorum.backup.location import Location

if TYPE_CHECKING:
    from gitquorum.backup.objectstore import ObjectStore


def open_store(location: Location) -> "ObjectStore":
    """The store at ``location``; its methods may raise ObjectStoreError."""
    from gitquorum.backup import objectstore  # here, not above: see the module's docstring

    return objectstore.ObjectStore(location)
