"""Everything that reads the cluster: snapshot files now, informers over the API later."""
