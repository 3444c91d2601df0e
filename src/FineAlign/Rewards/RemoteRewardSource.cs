using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>
/// A reward model behind HTTP, speaking OpenRLHF's remote reward-model protocol (openrlhf/utils/remote_rm_utils.py,
/// openrlhf/cli/serve_rm.py): POST <c>{"query": [prompt + response, …], "prompts": [prompt, …], "labels": [null, …]}</c>,
/// reply <c>{"rewards": [r, …]}</c> (<c>"scores"</c> is accepted too). FineAlign adds <c>"responses"</c> (texts) and
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
    private int _calls;

    public RemoteRewardSource(string name, Uri url, bool tokenLevel, int attempts = 3, string? apiKey = null) : base(name)
    {
        if (!url.IsAbsoluteUri || (url.Scheme != "http" && url.Scheme != "https"))
            throw new FineAlignException($"reward '{name}': '{url}' is not an http(s) URL");
        _url = url; _tokenLevel = tokenLevel; _attempts = Math.Max(1, attempts); _apiKey = apiKey;
    }

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
            for (int j = 0; j < t; j++) if (mask[i * t + j]) { row.Add(ids[i * t + j]); lengths[i]++; }
            string prompt = batch.PromptTexts?[i] ?? "", response = batch.ResponseTexts?[i] ?? "";
            prompts.Add(prompt); responses.Add(response); queries.Add(prompt + response); labels.Add(null); rid.Add(row);
        }
        string body = new JsonObject
        {
            ["query"] = queries, ["prompts"] = prompts, ["labels"] = labels, ["responses"] = responses, ["response_ids"] = rid,
        }.ToJsonString();

        var reply = Post(body, where);
        JsonArray list = (reply["rewards"] ?? reply["scores"] ?? reply["score"]) as JsonArray
            ?? throw new FineAlignException($"{where}: the reply has no 'rewards' list");
        if (list.Count != b) throw new FineAlignException($"{where}: {list.Count} rewards for {b} responses");
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
