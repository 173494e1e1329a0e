"""IntentLens headless core: data, models' inputs, metrics, cohorts, explanations. Never imports streamlit."""
