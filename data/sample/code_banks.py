"""Hand-written code templates for the StarCoderData sample. Slots: {noun}, {Noun}, {field}, {n}."""

NOUNS = "order invoice user session record ticket device sensor message account product shipment".split()
FIELDS = "name email status total count price created_at updated_at weight priority owner region".split()

PYTHON = [
    '''def load_{noun}s(path):
    """Read {noun}s from a CSV file and return them as a list of dicts."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return [row for row in reader if row.get("{field}")]
''',
    '''class {Noun}Repository:
    """Keeps {noun}s in memory, indexed by id."""

    def __init__(self):
        self._items = {{}}

    def add(self, item):
        if item.id in self._items:
            raise KeyError(f"duplicate {noun} {{item.id}}")
        self._items[item.id] = item

    def get(self, item_id):
        return self._items.get(item_id)

    def __len__(self):
        return len(self._items)
''',
    """def total_{field}(items):
    total = 0
    for item in items:
        value = getattr(item, "{field}", None)
        if value is None:
            continue
        total += value
    return total
""",
    '''def chunked(seq, size={n}):
    """Yield successive chunks of `size` elements from `seq`."""
    if size <= 0:
        raise ValueError("size must be positive")
    for start in range(0, len(seq), size):
        yield seq[start : start + size]
''',
    """@dataclass
class {Noun}:
    id: int
    {field}: str
    tags: list = field(default_factory=list)

    def describe(self):
        return f"{Noun} #{{self.id}} ({{self.{field}}})"
""",
    """def retry(func, attempts={n}, delay=0.5):
    last_error = None
    for attempt in range(attempts):
        try:
            return func()
        except ConnectionError as e:
            last_error = e
            time.sleep(delay * (2 ** attempt))
    raise RuntimeError("giving up after retries") from last_error
""",
]

JAVASCRIPT = [
    """export function format{Noun}({noun}) {{
  const {field} = {noun}.{field} ?? "unknown";
  return `${{{noun}.id}}: ${{{field}}}`;
}}
""",
    """async function fetch{Noun}s(baseUrl, page = 1) {{
  const response = await fetch(`${{baseUrl}}/{noun}s?page=${{page}}`);
  if (!response.ok) {{
    throw new Error(`request failed with status ${{response.status}}`);
  }}
  return response.json();
}}
""",
    """class {Noun}Store {{
  constructor() {{
    this.items = new Map();
  }}

  add(item) {{
    this.items.set(item.id, item);
    return this;
  }}

  sortedBy{Noun}() {{
    return [...this.items.values()].sort((a, b) => a.{field} - b.{field});
  }}
}}
""",
    """function debounce(fn, wait = {n}) {{
  let timer = null;
  return (...args) => {{
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), wait);
  }};
}}
""",
]

GO = [
    """// {Noun} is a single {noun} as stored in the database.
type {Noun} struct {{
	ID    int64
	Name  string
	Count int
}}
""",
    """func Find{Noun}(items []{Noun}, id int64) (*{Noun}, error) {{
	for i := range items {{
		if items[i].ID == id {{
			return &items[i], nil
		}}
	}}
	return nil, fmt.Errorf("{noun} %d not found", id)
}}
""",
    """func Sum{Noun}Counts(items []{Noun}) int {{
	total := 0
	for _, item := range items {{
		total += item.Count
	}}
	return total
}}
""",
    """func (s *Server) handle{Noun}(w http.ResponseWriter, r *http.Request) {{
	if r.Method != http.MethodGet {{
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s.{noun}s)
}}
""",
]

JAVA = [
    """public class {Noun}Service {{
    private final Map<Long, {Noun}> cache = new HashMap<>();

    public {Noun} find(long id) {{
        {Noun} value = cache.get(id);
        if (value == null) {{
            throw new IllegalArgumentException("unknown {noun}: " + id);
        }}
        return value;
    }}

    public void save({Noun} value) {{
        cache.put(value.getId(), value);
    }}
}}
""",
    """public static int count{Noun}s(List<{Noun}> items, String {field}) {{
    int count = 0;
    for ({Noun} item : items) {{
        if ({field}.equals(item.get{Noun}())) {{
            count++;
        }}
    }}
    return count;
}}
""",
    """@Override
public String toString() {{
    return "{Noun}{{" + "id=" + id + ", {field}=" + {field} + "}}";
}}
""",
]

CODE = {
    "python": (PYTHON, "import csv\nimport time\nfrom dataclasses import dataclass, field\n\n\n", ".py"),
    "javascript": (JAVASCRIPT, '"use strict";\n\n', ".js"),
    "go": (GO, 'package store\n\nimport (\n\t"encoding/json"\n\t"fmt"\n\t"net/http"\n)\n\n', ".go"),
    "java": (JAVA, "package com.example.store;\n\nimport java.util.*;\n\n", ".java"),
}

# Generic identifiers renamed per file, as different authors name the same thing differently.
IDENTIFIERS = {
    "item": ["item", "entry", "elem", "obj", "record_"],
    "items": ["items", "entries", "elements", "objs", "rows"],
    "total": ["total", "acc", "sum_", "running", "result"],
    "value": ["value", "val", "found", "hit", "current"],
    "start": ["start", "offset", "begin", "pos", "lo"],
    "size": ["size", "step", "width", "batch", "n"],
    "count": ["count", "matches", "hits", "numFound", "tally"],
    "response": ["response", "res", "resp", "reply", "answer"],
    "timer": ["timer", "handle", "pending", "timeoutId", "tid"],
    "cache": ["cache", "store", "byId", "index", "lookup"],
}
