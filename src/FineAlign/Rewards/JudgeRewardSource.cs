using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using static TorchSharp.torch;

namespace FineAlign.Rewards;

/// <summary>Settings of <c>judge:URL</c> rewards.</summary>
public sealed record JudgeOptions
{
    /// <summary>A text file with <c>{prompt}</c> and <c>{response}</c> placeholders, sent as the user message.</summary>
    public string? RubricPath { get; init; }
    /// <summary>The <c>model</c> field (empty: the server's only model).</summary>
    public string Model { get; init; } = "";
    public string? ApiKey { get; init; }
    public int MaxTokens { get; init; } = 64;
    /// <summary>Requests in flight.</summary>
    public int Concurrency { get; init; } = 4;
}

/// <summary>
/// LLM-as-judge reward (Zheng et al. 2023, "Judging LLM-as-a-Judge"): each (prompt, response) is rendered into a rubric
/// and sent to an OpenAI-compatible <c>/v1/chat/completions</c> at temperature 0; the score is the number after the last
/// "score:" (or "rating:") in the reply, or the reply itself when it is just a number. It lands on the response's last
/// token. A reply with no score is a one-line error naming the endpoint, the response and the reply.
/// </summary>
public sealed partial class JudgeRewardSource : RewardSource
{
    private static readonly HttpClient Http = new() { Timeout = TimeSpan.FromSeconds(180) };
    private readonly Uri _url;
    private readonly string _rubric;
    private readonly JudgeOptions _options;
    private int _calls;

    public JudgeRewardSource(string name, Uri baseUrl, JudgeOptions options) : base(name)
    {
        string path = options.RubricPath ?? throw new FineAlignException($"reward '{name}': a judge needs a rubric file (--judge-rubric PATH with {{prompt}} and {{response}})");
        if (!File.Exists(path)) throw new FineAlignException($"--judge-rubric {path}: file not found");
        _rubric = File.ReadAllText(path);
        if (!_rubric.Contains("{response}", StringComparison.Ordinal))
            throw new FineAlignException($"--judge-rubric {path}: the rubric has no {{response}} placeholder");
        string s = baseUrl.ToString().TrimEnd('/');
        if (s.EndsWith("/v1", StringComparison.Ordinal)) s = s[..^3];
        _url = new Uri(s + "/v1/chat/completions");
        _options = options;
    }

    [GeneratedRegex(@"(?:score|rating)\s*[:=]?\s*\**\s*(-?\d+(?:\.\d+)?)", RegexOptions.IgnoreCase)]
    private static partial Regex ScorePattern();

    /// <summary>The score in a judge's reply, or null.</summary>
    public static double? ParseScore(string reply)
    {
        var matches = ScorePattern().Matches(reply);
        string? text = matches.Count > 0 ? matches[^1].Groups[1].Value : reply.Trim();
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double d) && double.IsFinite(d) ? d : null;
    }

    protected override Tensor ComputeValues(RewardBatch batch)
    {
        int call = Interlocked.Increment(ref _calls);
        int b = (int)batch.BatchSize, t = (int)batch.Time;
        var mask = batch.ResponseMask.to(ScalarType.Bool).cpu().contiguous().data<bool>().ToArray();
        var scores = new double[b];
        using var gate = new SemaphoreSlim(_options.Concurrency);
        var tasks = Enumerable.Range(0, b).Select(async i =>
        {
            await gate.WaitAsync();
            try { scores[i] = await JudgeAsync(batch.PromptTexts?[i] ?? "", batch.ResponseTexts?[i]
                    ?? throw new FineAlignException($"reward '{Name}' needs response texts"), i, call); }
            finally { gate.Release(); }
        }).ToArray();
        try { Task.WaitAll(tasks); }
        catch (AggregateException ex) when (ex.Flatten().InnerExceptions[0] is FineAlignException fe) { throw fe; }
        var values = new float[b * t];
        for (int i = 0; i < b; i++)
        {
            int last = -1;
            for (int j = 0; j < t; j++) if (mask[i * t + j]) last = j;
            if (last >= 0) values[i * t + last] = (float)scores[i];
        }
        return tensor(values, new long[] { b, t });
    }

    private async Task<double> JudgeAsync(string prompt, string response, int row, int call)
    {
        string where = $"judge {_url} (response {row + 1} of reward batch {call})";
        string content = _rubric.Replace("{prompt}", prompt, StringComparison.Ordinal).Replace("{response}", response, StringComparison.Ordinal);
        var body = new JsonObject
        {
            ["model"] = _options.Model, ["temperature"] = 0, ["max_tokens"] = _options.MaxTokens,
            ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = content }),
        }.ToJsonString();
        string? last = null;
        for (int attempt = 1; attempt <= 3; attempt++)
        {
            if (attempt > 1) await Task.Delay(100 * (1 << (attempt - 2)));
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, _url) { Content = new StringContent(body, Encoding.UTF8, "application/json") };
                if (_options.ApiKey is string key) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
                using var reply = await Http.SendAsync(request);
                string text = await reply.Content.ReadAsStringAsync();
                int status = (int)reply.StatusCode;
                if (status == 429 || status >= 500) { last = $"HTTP {status}"; continue; }
                if (status != 200) throw new FineAlignException($"{where}: HTTP {status}: {Snippet(text)}");
                string? said;
                try { said = JsonNode.Parse(text)?["choices"]?[0]?["message"]?["content"]?.GetValue<string>(); }
                catch (System.Text.Json.JsonException) { said = null; }
                if (said is null) throw new FineAlignException($"{where}: the reply has no choices[0].message.content: {Snippet(text)}");
                return ParseScore(said) ?? throw new FineAlignException($"{where}: no score in the judge's reply '{Snippet(said)}' (expected e.g. 'Score: 7')");
            }
            catch (HttpRequestException e) { last = e.Message; }
            catch (TaskCanceledException) { last = "no reply within the timeout"; }
        }
        throw new FineAlignException($"{where}: {last} (after 3 attempts)");
    }

    private static string Snippet(string s) { s = s.ReplaceLineEndings(" "); return s.Length > 120 ? s[..120] + "…" : s; }
}
