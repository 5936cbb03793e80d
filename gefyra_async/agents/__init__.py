"""Process entry points inside the project's images: stowaway and cargo agents."""
