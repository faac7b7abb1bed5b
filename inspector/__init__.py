"""PCB defect inspector."""
