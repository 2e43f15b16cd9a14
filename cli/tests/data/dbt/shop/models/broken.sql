select no_such_column from {{ source('raw', 'orders') }}
