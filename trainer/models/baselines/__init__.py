"""The "traditional system" every learned model must beat: MostPop, ItemKNN and BPR-MF."""
