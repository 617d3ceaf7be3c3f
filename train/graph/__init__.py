"""Graph family: Cora node classification (GCN, GAT) and MUTAG graph classification (GCN)."""
