"""The paper's ablations (Table 1a-e, Table 3) and this project's studies as data, with their
results tables and plots."""
