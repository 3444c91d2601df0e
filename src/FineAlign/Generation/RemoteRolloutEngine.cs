using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using FineAlign.Models;
using FineAlign.Text;

namespace FineAlign.Generation;

/// <summary>Settings of <see cref="RemoteRolloutEngine"/>.</summary>
public sealed record RemoteRolloutOptions
{
    /// <summary>Base URLs of OpenAI-compatible servers (http://host:port, with or without /v1).</summary>
    public required IReadOnlyList<Uri> Endpoints { get; init; }
    /// <summary>The <c>model</c> field sent (the server's served model name).</summary>
    public required string Model { get; init; }
    public string? ApiKey { get; init; }
    /// <summary>Requests in flight per endpoint.</summary>
    public int MaxConcurrency { get; init; } = 2;
    /// <summary>Attempts per request on one endpoint before it is declared failed (429 / 5xx / timeouts / refused connections retry).</summary>
    public int Attempts { get; init; } = 3;
    public TimeSpan Timeout { get; init; } = TimeSpan.FromSeconds(120);
    /// <summary>First retry delay; doubles per attempt.</summary>
    public TimeSpan Backoff { get; init; } = TimeSpan.FromMilliseconds(100);
    /// <summary>Where <see cref="RemoteRolloutEngine.SyncWeights"/> writes the policy's HF folder (a path every server can read).</summary>
    public string? SyncDir { get; init; }
    /// <summary>
    /// LoRA sync: after each update load the adapter with vLLM's <c>POST /v1/load_lora_adapter</c> under this name
    /// (<c>load_inplace</c>) and sample from that name; null = full-weight sync through <c>/v1/reload_weights</c>.
    /// </summary>
    public string? LoraName { get; init; }
    /// <summary>
    /// Send a per-prompt <c>seed</c> (default): samples reproducible and independent of which server answered. Off, servers
    /// sample unseeded — <c>finealign serve</c> decodes a seeded request alone, unseeded ones share a batch.
    /// </summary>
    public bool Seeded { get; init; } = true;

    public void Validate()
    {
        if (Endpoints.Count == 0) throw new FineAlignException("--rollout-endpoint: give at least one server URL");
        foreach (var e in Endpoints)
            if (!e.IsAbsoluteUri || (e.Scheme != "http" && e.Scheme != "https"))
                throw new FineAlignException($"--rollout-endpoint '{e}' is not an http(s) URL");
        if (string.IsNullOrWhiteSpace(Model)) throw new FineAlignException("--rollout-model: name the model the servers serve");
        if (MaxConcurrency < 1 || Attempts < 1) throw new FineAlignException("rollout concurrency and attempts must be at least 1");
    }
}

/// <summary>
/// <see cref="IRolloutEngine"/> over a fleet of OpenAI-compatible servers (vLLM, SGLang, <c>finealign serve</c>):
/// each prompt goes as token ids to <c>/v1/completions</c> with <c>n</c> samples, <c>logprobs</c>, a per-prompt seed,
/// <c>stop_token_ids</c> and vLLM's <c>return_tokens_as_token_ids</c>, so the response comes back as ids ("token_id:N"),
/// never re-tokenised text. Prompts are dealt round robin over the live endpoints with bounded concurrency per
/// endpoint; a request retries with exponential backoff, and an endpoint that keeps failing is reported once and
/// skipped from then on (its prompts move to the others). A step fails only when no endpoint answers.
/// The servers' log-probs are the model's own distribution (temperature 1, as vLLM returns by default).
/// </summary>
public sealed class RemoteRolloutEngine : IRolloutEngine, IDisposable
{
    private readonly RemoteRolloutOptions _options;
    private readonly HttpClient _http;
    private readonly Endpoint[] _endpoints;
    private readonly Action<string> _log;
    private int _batch;

    private sealed class Endpoint(Uri baseUri, int concurrency)
    {
        public Uri Base { get; } = baseUri;
        public SemaphoreSlim Slots { get; } = new(concurrency, concurrency);
        public volatile bool Failed;
        public string? Reason;
        public override string ToString() => Base.ToString().TrimEnd('/');
    }

    public RemoteRolloutEngine(RemoteRolloutOptions options, Action<string>? log = null, HttpMessageHandler? handler = null)
    {
        options.Validate();
        _options = options;
        _log = log ?? (_ => { });
        _http = handler is null ? new HttpClient() : new HttpClient(handler);
        _http.Timeout = options.Timeout;
        if (options.ApiKey is string key) _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        _endpoints = options.Endpoints.Select(e => new Endpoint(ApiRoot(e), options.MaxConcurrency)).ToArray();
    }

    /// <summary>The optimizer step whose weights the servers hold (0 = the initial policy, which they were started with).</summary>
    public int WeightsVersion { get; private set; }

    /// <summary>Endpoints still taking requests.</summary>
    public IReadOnlyList<string> LiveEndpoints => _endpoints.Where(e => !e.Failed).Select(e => e.ToString()).ToList();

    // http://h:p and http://h:p/v1 both mean the server's root; requests go to {root}/v1/...
    private static Uri ApiRoot(Uri u)
    {
        string s = u.ToString().TrimEnd('/');
        if (s.EndsWith("/v1", StringComparison.Ordinal)) s = s[..^3];
        return new Uri(s + "/");
    }

    public IReadOnlyList<RolloutSample> Generate(RolloutRequest request)
    {
        request.Validate();
        int batch = Interlocked.Increment(ref _batch);
        int n = request.SamplesPerPrompt;
        var results = new RolloutSample[request.Count];
        var tasks = new Task[request.PromptIds.Count];
        for (int i = 0; i < request.PromptIds.Count; i++)
        {
            int prompt = i;
            tasks[i] = Task.Run(async () =>
            {
                var samples = await CompleteOnAnyAsync(request, prompt, batch);
                for (int j = 0; j < n; j++) results[prompt * n + j] = samples[j];
            });
        }
        try { Task.WaitAll(tasks); }
        catch (AggregateException ex)
        {
            var first = ex.Flatten().InnerExceptions.FirstOrDefault(e => e is FineAlignException) ?? ex.Flatten().InnerExceptions[0];
            if (first is FineAlignException) throw first;
            throw new FineAlignException($"remote rollout batch {batch} failed: {first.Message}", first);
        }
        return results;
    }

    // Round robin by prompt index over the live endpoints; a failing endpoint is marked and the prompt moves on.
    private async Task<RolloutSample[]> CompleteOnAnyAsync(RolloutRequest request, int prompt, int batch)
    {
        for (int k = 0; k < _endpoints.Length; k++)
        {
            var ep = _endpoints[(prompt + k) % _endpoints.Length];
            if (ep.Failed) continue;
            try { return await CompleteAsync(ep, request, prompt, batch); }
            catch (EndpointFailure f)
            {
                MarkFailed(ep, f.Message, batch);
            }
        }
        string reasons = string.Join("; ", _endpoints.Select(e => $"{e}: {e.Reason ?? "not tried"}"));
        throw new FineAlignException($"remote rollout batch {batch}: no endpoint answered ({reasons})");
    }

    private void MarkFailed(Endpoint ep, string reason, int batch)
    {
        lock (ep)
        {
            if (ep.Failed) return;
            ep.Reason = reason;
            ep.Failed = true;
        }
        _log($"rollout endpoint {ep} failed at rollout batch {batch} and is skipped from now on: {reason}");
    }

    /// <summary>A problem of one endpoint (the batch may continue elsewhere), as opposed to a malformed reply.</summary>
    private sealed class EndpointFailure(string message) : Exception(message);

    private async Task<RolloutSample[]> CompleteAsync(Endpoint ep, RolloutRequest request, int prompt, int batch)
    {
        var body = new JsonObject
        {
            ["model"] = WeightsVersion > 0 && _options.LoraName is string lora ? lora : _options.Model, ["prompt"] = new JsonArray(request.PromptIds[prompt].Select(t => (JsonNode)t).ToArray()),
            ["n"] = request.SamplesPerPrompt, ["max_tokens"] = request.MaxNewTokens, ["temperature"] = request.Temperature,
            ["top_p"] = request.TopP, ["logprobs"] = 0, ["return_tokens_as_token_ids"] = true, ["skip_special_tokens"] = false,
        };
        if (_options.Seeded) body["seed"] = unchecked(request.Seed + prompt);
        if (request.TopK > 0) body["top_k"] = request.TopK;
        if (request.StopTokenIds is { Count: > 0 } stops) body["stop_token_ids"] = new JsonArray(stops.Select(t => (JsonNode)t).ToArray());
        string json = body.ToJsonString();
        var url = new Uri(ep.Base, "v1/completions");
        string? lastError = null;
        for (int attempt = 1; attempt <= _options.Attempts; attempt++)
        {
            if (ep.Failed) throw new EndpointFailure(ep.Reason ?? "failed");
            if (attempt > 1) await Task.Delay(_options.Backoff * Math.Pow(2, attempt - 2));
            await ep.Slots.WaitAsync();
            try
            {
                var sw = Stopwatch.StartNew();
                using var response = await _http.PostAsync(url, new StringContent(json, Encoding.UTF8, "application/json"));
                string text = await response.Content.ReadAsStringAsync();
                int status = (int)response.StatusCode;
                if (status == 429 || status >= 500) { lastError = $"HTTP {status}: {Snippet(text)}"; continue; }
                if (status != 200) throw new FineAlignException($"rollout endpoint {ep}: HTTP {status} for prompt {prompt + 1} of rollout batch {batch}: {Snippet(text)}");
                return Parse(ep, text, request, prompt, batch);
            }
            catch (HttpRequestException e) { lastError = e.Message; }
            catch (TaskCanceledException) { lastError = $"no reply within {_options.Timeout.TotalSeconds:G3} s"; }
            finally { ep.Slots.Release(); }
        }
        throw new EndpointFailure($"{lastError} (after {_options.Attempts} attempts)");
    }

    private static string Snippet(string s) { s = s.ReplaceLineEndings(" "); return s.Length > 200 ? s[..200] + "…" : s; }

    private RolloutSample[] Parse(Endpoint ep, string text, RolloutRequest request, int prompt, int batch)
    {
        string where = $"rollout endpoint {ep}, prompt {prompt + 1} of rollout batch {batch}";
        JsonNode? root;
        try { root = JsonNode.Parse(text); }
        catch (System.Text.Json.JsonException) { throw new FineAlignException($"{where}: the reply is not JSON: {Snippet(text)}"); }
        if (root?["choices"] is not JsonArray choices) throw new FineAlignException($"{where}: the reply has no 'choices' list");
        int n = request.SamplesPerPrompt;
        if (choices.Count != n) throw new FineAlignException($"{where}: {choices.Count} choices for n = {n}");
        var samples = new RolloutSample[n];
        var stops = request.StopTokenIds ?? [];
        for (int c = 0; c < n; c++)
        {
            var choice = choices[c];
            int index = choice?["index"]?.GetValue<int>() ?? c;
            if (index < 0 || index >= n || samples[index] is not null) throw new FineAlignException($"{where}: choice index {index} is out of range or repeated");
            if (choice?["logprobs"] is not JsonObject lp || lp["tokens"] is not JsonArray tokens || lp["token_logprobs"] is not JsonArray lps)
                throw new FineAlignException($"{where}: choice {index} has no logprobs.tokens / token_logprobs (the server must honour 'logprobs' and vLLM's 'return_tokens_as_token_ids')");
            if (tokens.Count != lps.Count) throw new FineAlignException($"{where}: choice {index} has {tokens.Count} tokens but {lps.Count} log-probs");
            var ids = new int[tokens.Count];
            var logps = new float[tokens.Count];
            for (int t = 0; t < tokens.Count; t++)
            {
                string tokenText = tokens[t]?.GetValue<string>() ?? "";
                if (!tokenText.StartsWith("token_id:", StringComparison.Ordinal)
                    || !int.TryParse(tokenText.AsSpan(9), NumberStyles.None, CultureInfo.InvariantCulture, out ids[t]))
                    throw new FineAlignException($"{where}: choice {index} token {t + 1} is '{Snippet(tokenText)}', not 'token_id:N' (send return_tokens_as_token_ids; vLLM ≥ 0.5 and finealign serve honour it)");
                logps[t] = lps[t] is JsonValue v && v.TryGetValue(out double d) ? (float)d : float.NaN;
            }
            string finish = choice?["finish_reason"]?.GetValue<string>() ?? "length";
            var reason = finish == "length" ? RolloutFinish.Length : RolloutFinish.Stop;
            // Keep the stop token as the sample's last token (the local engine's contract) when a server leaves it out.
            if (reason == RolloutFinish.Stop && stops.Count > 0 && (ids.Length == 0 || !stops.Contains(ids[^1])))
            {
                ids = [.. ids, stops[0]];
                logps = [.. logps, float.NaN];
            }
            samples[index] = new RolloutSample(ids, logps, reason);
        }
        return samples;
    }

    /// <summary>
    /// Weight sync: writes <paramref name="policy"/> as an HF folder under <see cref="RemoteRolloutOptions.SyncDir"/>
    /// (a fresh folder per version, so a server never reads a half-written one) and asks every live endpoint to load it
    /// through <c>POST /v1/reload_weights</c> (<c>finealign serve</c>). An endpoint that refuses is reported and skipped.
    /// </summary>
    public void SyncWeights(CausalLM policy, TextTokenizer tokenizer, int version)
    {
        string root = _options.SyncDir ?? throw new FineAlignException("weight sync needs a shared folder (--rollout-sync-dir)");
        Directory.CreateDirectory(root);
        string folder = Path.GetFullPath(Path.Combine(root, $"weights-{version}"));
        string tmp = folder + ".tmp";
        if (Directory.Exists(tmp)) Directory.Delete(tmp, true);
        ModelIO.Save(policy, tmp, tokenizer);
        if (Directory.Exists(folder)) Directory.Delete(folder, true);
        Directory.Move(tmp, folder);
        bool lora = _options.LoraName is not null;
        if (lora && policy.Lora is null) throw new FineAlignException("LoRA weight sync (--rollout-sync lora) needs a LoRA policy (--use-peft)");
        var body = (lora ? new JsonObject { ["lora_name"] = _options.LoraName, ["lora_path"] = folder, ["load_inplace"] = true }
                         : new JsonObject { ["model_path"] = folder }).ToJsonString();
        string route = lora ? "v1/load_lora_adapter" : "v1/reload_weights";
        var live = _endpoints.Where(e => !e.Failed).ToList();
        var tasks = live.Select(async ep =>
        {
            try
            {
                using var response = await _http.PostAsync(new Uri(ep.Base, route), new StringContent(body, Encoding.UTF8, "application/json"));
                if (!response.IsSuccessStatusCode)
                    return (ep, (string?)$"{route}: HTTP {(int)response.StatusCode}: {Snippet(await response.Content.ReadAsStringAsync())}");
                return (ep, (string?)null);
            }
            catch (Exception e) when (e is HttpRequestException or TaskCanceledException) { return (ep, (string?)$"{route}: {e.Message}"); }
        }).ToArray();
        Task.WaitAll(tasks);
        foreach (var (ep, error) in tasks.Select(t => t.Result))
            if (error is not null) MarkFailed(ep, error, _batch);
        if (_endpoints.All(e => e.Failed)) throw new FineAlignException($"weight sync to version {version}: no endpoint reloaded ({string.Join("; ", _endpoints.Select(e => $"{e}: {e.Reason}"))})");
        WeightsVersion = version;
        // Older versions are no longer served: keep only this one.
        foreach (var old in Directory.EnumerateDirectories(root, "weights-*"))
            if (!string.Equals(Path.GetFullPath(old), folder, StringComparison.Ordinal))
                try { Directory.Delete(old, true); } catch (IOException) { }
    }

    public void Dispose()
    {
        _http.Dispose();
        foreach (var e in _endpoints) e.Slots.Dispose();
    }
}
