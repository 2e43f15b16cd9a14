select id, status, amount, '{{ var("ds") }}' as loaded_for
from {{ source('raw', 'orders') }}
