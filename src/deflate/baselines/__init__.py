"""The compared systems: BiLSTM-CRF, M-JAVE, JG-AVE, the dictionary."""
