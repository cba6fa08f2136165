"""Everything that reads the cluster: snapshot files, and informers (list + watch) over the API."""
