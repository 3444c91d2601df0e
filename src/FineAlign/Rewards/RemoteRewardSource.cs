using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>
/// A reward model behind HTTP, speaking OpenRLHF's remote reward-model protocol (openrlhf/utils/agent.py's
/// _fetch_rewards_via_http, openrlhf/cli/serve_rm.py): POST <c>{"query": [prompt + response, …], "prompts": [prompt, …],
/// "labels": [label, …]}</c> where, as in OpenRLHF, a query is the prompt followed by the response decoded with its special
/// tokens (the EOS included) and a label is the prompt row's <c>--label-key</c> column (null without one); reply
/// <c>{"rewards": [r, …]}</c> (<c>"scores"</c> when there is no "rewards"), and the means of <c>"extra_logs"</c> lists are
/// logged as <c>rewards/&lt;name&gt;/&lt;key&gt;</c>. FineAlign adds <c>"responses"</c> (texts) and
/// <c>"response_ids"</c> (token ids) so a server can score tokens. Sequence rewards land on each response's last token;
/// the token-level variant (<c>http-token:URL</c>) reads <c>"rewards": [[r_1, …, r_T], …]</c>, one value per response
/// token (FineAlign's [B, T] contract). Any bad reply (HTTP error, unreachable, wrong count or length, a non-number) is
/// a one-line error naming the endpoint and the reward call.
/// </summary>
public sealed class RemoteRewardSource : RewardSource
{
    private static readonly HttpClient Shared = new() { Timeout = TimeSpan.FromSeconds(180) };
    private readonly Uri _url;
    private readonly bool _tokenLevel;
    private readonly int _attempts;
    private readonly string? _apiKey;
    private readonly Text.TextTokenizer? _tokenizer;
    private readonly string? _labelColumn;
    private int _calls;
    private Dictionary<string, double> _extraLogs = new();

    /// <param name="tokenizer">Decodes the response ids with their special tokens for "query" (OpenRLHF's query); null: the response text.</param>
    /// <param name="labelColumn">The dataset column sent as "labels" (OpenRLHF's --label_key); null: nulls.</param>
    public RemoteRewardSource(string name, Uri url, bool tokenLevel, int attempts = 3, string? apiKey = null,
        Text.TextTokenizer? tokenizer = null, string? labelColumn = null) : base(name)
    {
        if (!url.IsAbsoluteUri || (url.Scheme != "http" && url.Scheme != "https"))
            throw new FineAlignException($"reward '{name}': '{url}' is not an http(s) URL");
        _url = url; _tokenLevel = tokenLevel; _attempts = Math.Max(1, attempts); _apiKey = apiKey; _tokenizer = tokenizer; _labelColumn = labelColumn;
    }

    public override IReadOnlyList<string> Columns => _labelColumn is null ? [] : [_labelColumn];

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        int call = Interlocked.Increment(ref _calls);
        string where = $"reward endpoint {_url} (reward batch {call})";
        int b = (int)batch.BatchSize, t = (int)batch.Time;
        var ids = batch.ResponseIds.to(int64).cpu().contiguous().data<long>().ToArray();
        var mask = batch.ResponseMask.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        var lengths = new int[b];
        var prompts = new JsonArray(); var queries = new JsonArray(); var responses = new JsonArray(); var labels = new JsonArray(); var rid = new JsonArray();
        for (int i = 0; i < b; i++)
        {
            var row = new JsonArray();
            var valid = new List<int>();
            for (int j = 0; j < t; j++) if (mask[i * t + j]) { row.Add(ids[i * t + j]); valid.Add((int)ids[i * t + j]); lengths[i]++; }
            string prompt = batch.PromptTexts?[i] ?? "", response = batch.ResponseTexts?[i] ?? "";
            string query = prompt + (_tokenizer is null ? response : _tokenizer.Decode(valid, skipSpecialTokens: false));
            prompts.Add(prompt); responses.Add(response); queries.Add(query); rid.Add(row);
            labels.Add(_labelColumn is null ? null : ColumnValue(batch, i, _labelColumn));
        }
        string body = new JsonObject
        {
            ["query"] = queries, ["prompts"] = prompts, ["labels"] = labels, ["responses"] = responses, ["response_ids"] = rid,
        }.ToJsonString();

        var reply = Post(body, where);
        JsonArray list = (reply["rewards"] ?? reply["scores"] ?? reply["score"]) as JsonArray
            ?? throw new FineAlignException($"{where}: the reply has no 'rewards' list");
        if (list.Count != b) throw new FineAlignException($"{where}: {list.Count} rewards for {b} responses");
        _extraLogs = ExtraLogs(reply["extra_logs"]);
        var values = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            if (_tokenLevel)
            {
                if (list[i] is not JsonArray tokens)
                    throw new FineAlignException($"{where}: reward {i + 1} is not a list of per-token rewards (token-level endpoint)");
                if (tokens.Count != lengths[i])
                    throw new FineAlignException($"{where}: response {i + 1} has {lengths[i]} tokens but {tokens.Count} token rewards");
                int k = 0;
                for (int j = 0; j < t; j++) if (mask[i * t + j]) values[i * t + j] = Number(tokens[k++], where, $"token reward {k} of response {i + 1}");
            }
            else
            {
                float r = Number(list[i], where, $"reward {i + 1}");
                int last = -1;
                for (int j = 0; j < t; j++) if (mask[i * t + j]) last = j;
                if (last >= 0) values[i * t + last] = r;
            }
        }
        return tensor(values, new long[] { b, t });
    }

    // OpenRLHF's extra_logs: {key: [v per query] or v}; the mean of the numbers of each key.
    private Dictionary<string, double> ExtraLogs(JsonNode? node)
    {
        var logs = new Dictionary<string, double>();
        if (node is not JsonObject o) return logs;
        foreach (var (key, value) in o)
        {
            var numbers = (value is JsonArray a ? a.ToList() : [value]).Select(x => x is JsonValue v && v.TryGetValue(out double d) && double.IsFinite(d) ? d : double.NaN).ToList();
            if (numbers.Count > 0 && numbers.All(double.IsFinite)) logs[$"rewards/{Name}/{key}"] = numbers.Average();
        }
        return logs;
    }

    protected override void AddMetrics(Dictionary<string, double> metrics, Tensor values, Tensor mask)
    {
        base.AddMetrics(metrics, values, mask);
        foreach (var kv in _extraLogs) metrics[kv.Key] = kv.Value;
    }

    private static float Number(JsonNode? node, string where, string what)
    {
        if (node is JsonValue v && v.TryGetValue(out double d))
        {
            if (!double.IsFinite(d)) throw new FineAlignException($"{where}: {what} is not finite ({d})");
            return (float)d;
        }
        throw new FineAlignException($"{where}: {what} is not a number ({node?.ToJsonString() ?? "null"})");
    }

    private JsonObject Post(string body, string where)
    {
        string? last = null;
        for (int attempt = 1; attempt <= _attempts; attempt++)
        {
            if (attempt > 1) Thread.Sleep(100 * (1 << (attempt - 2)));
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, _url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                if (_apiKey is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _apiKey);
                using var response = Shared.Send(request);
                string text = new StreamReader(response.Content.ReadAsStream()).ReadToEnd();
                int status = (int)response.StatusCode;
                if (status == 429 || status >= 500) { last = $"HTTP {status}: {Snippet(text)}"; continue; }
                if (status != 200) throw new FineAlignException($"{where}: HTTP {status}: {Snippet(text)}");
                try { return JsonNode.Parse(text) as JsonObject ?? throw new FineAlignException($"{where}: the reply is not a JSON object: {Snippet(text)}"); }
                catch (System.Text.Json.JsonException) { throw new FineAlignException($"{where}: the reply is not JSON: {Snippet(text)}"); }
            }
            catch (HttpRequestException e) { last = e.Message; }
            catch (TaskCanceledException) { last = "no reply within the timeout"; }
        }
        throw new FineAlignException($"{where}: {last} (after {_attempts} attempts)");
    }

    private static string Snippet(string s) { s = s.ReplaceLineEndings(" "); return s.Length > 200 ? s[..200] + "…" : s; }
}
