{#- Every row satisfies `<column> <expression>` (dbt_utils' expression_is_true on a column, without the package). -#}
{% test dbt_utils_free_expression_is_true(model, column_name, expression) %}
select *
from {{ model }}
where not ({{ column_name }} {{ expression }})
{% endtest %}
