{#-
    Data tests check the rows a run wrote, not the whole history: every generic test's model is filtered to the
    run's window (project-wide `where: __run_window__`, dbt_project.yml), so a test costs the same on day 400 as on
    day 1. The window of each model is named here by its date column; a model not named here (first-seen, the
    training set, the outcomes: bounded or rebuilt whole) is tested whole. dbt's documented hook for a `where`
    decided at run time: https://docs.getdbt.com/reference/resource-configs/where#custom-logic
-#}
{% macro get_where_subquery(relation) -%}
    {%- set where = config.get('where') -%}
    {%- if where and '__run_window__' in where -%}
        {%- set first, last = min_as_of_date(), as_of_date() -%}
        {%- set windows = {
            'stg_shop__events': event_days_between(first ~ ' - 1', last),
            'stg_shop__reviews': 'review_date >= ' ~ first ~ ' - 1 and review_date < ' ~ last,
            'int_user_daily_activity': 'activity_date >= ' ~ first ~ ' - 1 and activity_date < ' ~ last,
            'int_user_purchase_days': 'purchase_date >= ' ~ first ~ ' - 1 and purchase_date < ' ~ last,
            'int_user_item_daily': 'activity_date >= ' ~ first ~ ' - 1 and activity_date < ' ~ last,
            'fct_user_item_interactions': is_run_as_of_date('as_of_date'),
            'feat_user_daily': is_run_as_of_date('as_of_date'),
            'feat_user_rfm': is_run_as_of_date('as_of_date'),
            'fct_scoring_population': is_run_as_of_date('as_of_date'),
            'fct_user_labels': 'as_of_date >= ' ~ first ~ ' - ' ~ (var('targets') | map(attribute='horizon_days') | max) ~ ' and as_of_date < ' ~ last,
            'aud_likely_purchasers_7d': 'as_of_date between ' ~ first ~ ' and ' ~ last,
            'aud_likely_churning_high_value': 'as_of_date between ' ~ first ~ ' and ' ~ last,
            'aud_predicted_top_spenders': 'as_of_date between ' ~ first ~ ' and ' ~ last,
            'aud_likely_purchasers_with_items': 'as_of_date between ' ~ first ~ ' and ' ~ last,
        } -%}
        {%- set window = windows.get(relation.identifier) -%}
        {%- if window is none -%}
            {%- do return(relation) -%}
        {%- endif -%}
        {%- set where = where | replace('__run_window__', window) -%}
    {%- endif -%}
    {%- if where -%}
        {%- set filtered -%}
            (select * from {{ relation }} where {{ where }}) dbt_subquery
        {%- endset -%}
        {%- do return(filtered) -%}
    {%- else -%}
        {%- do return(relation) -%}
    {%- endif -%}
{%- endmacro %}
