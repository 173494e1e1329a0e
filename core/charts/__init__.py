"""Pure plotly: a tidy frame in, a ``go.Figure`` out, one module per page section.

* :mod:`core.charts.base`: the one plotly template (``"intentlens"``), the behaviour colours, number
  formats, :func:`empty_figure` and the helpers every chart is built on;
* :mod:`core.charts.data` (Data page), :mod:`core.charts.performance` (Train / Performance),
  :mod:`core.charts.cohorts` (Cohorts), :mod:`core.charts.outlook` (Cohorts: demand outlook),
  :mod:`core.charts.explain` (Explain), :mod:`core.charts.monitor` (Monitor),
  :mod:`core.charts.lineage` (Train: the Models timeline),
  :mod:`core.charts.realized` (Monitor: realized accuracy and resources).

A chart function checks the columns it needs (a missing one is a programming error:
``ValueError``) and returns :func:`empty_figure` with a sentence when the frame has no rows. Pages
show figures with ``st.plotly_chart(fig, theme=None)`` so that this template applies. The names
below are re-exported so that a page or a test can write ``charts.funnel(...)``.
"""
from core.charts.base import (  # noqa: F401
    ACCENT,
    BEHAVIOR_COLORS,
    COUNT_FORMAT,
    GRID,
    NEUTRAL,
    SHARE_FORMAT,
    SHARE_FORMAT_FINE,
    TEMPLATE_NAME,
    TEXT,
    WARNING,
    base_figure,
    behavior_color,
    empty_figure,
    is_empty_figure,
    ordered_behaviors,
    require_columns,
    template,
)
from core.charts.cohorts import (  # noqa: F401
    BAND_FILLS,
    COHORT_COLOR,
    EVERYONE_COLOR,
    cohort_contrast,
    cohort_score_histogram,
    value_curve,
)
from core.charts.data import (  # noqa: F401
    behavior_mix,
    events_per_day,
    events_per_user,
    funnel,
    hour_of_day,
    quarantine_reasons,
    top_categories,
)
from core.charts.explain import (  # noqa: F401
    ATTENTION_SCALE,
    ATTRIBUTION_SCALE,
    MAX_TICKS,
    METHOD_COLORS,
    METHOD_LABELS,
    attention_heatmap,
    attribution_bars,
    attribution_timeline,
    driver_bars,
    faithfulness_curves,
    shap_bar,
    shap_beeswarm,
)
from core.charts.lineage import LINEAGE_NAME, STATUS_STYLES, models_timeline  # noqa: F401
from core.charts.monitor import (  # noqa: F401
    behavior_shift,
    cohort_overlap,
    drift_bins,
    feature_psi,
    service_latency,
    service_traffic,
)
from core.charts.outlook import demand_outlook  # noqa: F401
from core.charts.performance import (  # noqa: F401
    BUYER_COLOR,
    CONFUSION_NAMES,
    CURVE_POINTS,
    METRIC_LABELS,
    MODEL_COLORS,
    NON_BUYER_COLOR,
    calibration_chart,
    confusion_matrix,
    gains_chart,
    label_efficiency_chart,
    leaderboard,
    lift_chart,
    member_scores,
    model_color,
    pr_curves,
    roc_curves,
    score_histogram,
    segment_quality,
    split_comparison_chart,
    training_curves,
)
from core.charts.realized import predicted_vs_actual, realized_precision, resource_usage  # noqa: F401
