using System.ClientModel;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json.Nodes;
using System.Net.Http.Json;
using FineAlign.Generation;
using FineAlign.Models;
using FineAlign.Serving;
using FineAlign.Tests.Cli;
using FineAlign.Tests.Support;
using FineAlign.Text;
using OpenAI.Chat;
using static FineAlign.Tests.Serving.ServerHarness;
using ChatMessage = OpenAI.Chat.ChatMessage;

#pragma warning disable OPENAI001   // ChatCompletionOptions.Seed is marked experimental in the SDK

namespace FineAlign.Tests.Serving;

/// <summary>
/// finealign serve over real HTTP: Kestrel on a loopback port, the official OpenAI .NET SDK (2.15.0) as the client,
/// raw HttpClient for bodies the SDK would never send. Expected outputs come from the library in-process.
/// </summary>
public class ServeTests
{
    private static readonly int[][] Prompts = [[256, 72, 101, 108, 108, 111], [256, 87, 104, 121]];

    [Fact]
    public async Task Sdk_lists_the_served_model_with_its_context()
    {
        await using var h = await StartAsync();
        var models = (await h.Models.GetModelsAsync()).Value;
        Assert.Equal(Name, Assert.Single(models).Id);
        var one = (await h.Models.GetModelAsync(Name)).Value;
        Assert.Equal("finealign", one.OwnedBy);
        var raw = JsonNode.Parse(await h.Http.GetStringAsync("/v1/models"))!;
        Assert.Equal(96, raw["data"]![0]!["max_model_len"]!.GetValue<int>());
        Assert.Equal("ok", JsonNode.Parse(await h.Http.GetStringAsync("/health"))!["status"]!.GetValue<string>());
    }

    [Fact]
    public async Task Greedy_completion_equals_in_process_generation_and_counts_usage()
    {
        await using var h = await StartAsync();
        var tok = new ByteTokenizer();
        var r = await h.CompleteAsync(new JsonObject { ["prompt"] = "Hello", ["max_tokens"] = 12, ["temperature"] = 0 });
        int[] ids = [256, .. tok.Encode("Hello")];
        using var model = h.LoadModel();
        var want = TextGenerator.Generate(model, [ids], Greedy(12), tok)[0];
        var choice = r["choices"]![0]!;
        Assert.Equal(want.Text, choice["text"]!.GetValue<string>());
        Assert.Equal(want.FinishReason == FinishReason.Length ? "length" : "stop", choice["finish_reason"]!.GetValue<string>());
        Assert.Equal("text_completion", r["object"]!.GetValue<string>());
        Assert.Equal(ids.Length, r["usage"]!["prompt_tokens"]!.GetValue<int>());
        Assert.Equal(want.Tokens.Length, r["usage"]!["completion_tokens"]!.GetValue<int>());
        Assert.Equal(ids.Length + want.Tokens.Length, r["usage"]!["total_tokens"]!.GetValue<int>());
    }

    [Fact]
    public async Task Token_id_prompts_with_n_and_logprobs_match_finealign_logprobs_scoring()
    {
        await using var h = await StartAsync();
        var prompt = new JsonArray(Prompts.Select(p => (JsonNode)new JsonArray(p.Select(x => (JsonNode)x).ToArray())).ToArray());
        var r = await h.CompleteAsync(new JsonObject
        {
            ["prompt"] = prompt, ["n"] = 3, ["max_tokens"] = 10, ["seed"] = 5, ["logprobs"] = 3, ["echo"] = true,
            ["return_tokens_as_token_ids"] = true, ["ignore_eos"] = true,
        });
        var choices = r["choices"]!.AsArray();
        Assert.Equal(6, choices.Count);                               // 2 prompts × n = 3, index = prompt * n + sample
        var sequences = new List<int[]>();
        for (int c = 0; c < 6; c++)
        {
            Assert.Equal(c, choices[c]!["index"]!.GetValue<int>());
            var lp = choices[c]!["logprobs"]!;
            int[] ids = TokenIds(lp["tokens"]);
            int[] promptIds = Prompts[c / 3];
            Assert.Equal(promptIds, ids[..promptIds.Length]);         // echo: the prompt tokens come first
            Assert.Equal(promptIds.Length + 10, ids.Length);          // ignore_eos: exactly max_tokens new tokens
            Assert.Null(lp["token_logprobs"]![0]);                    // nothing predicts the first token
            Assert.Null(lp["top_logprobs"]![0]);
            for (int t = 1; t < ids.Length; t++)
            {
                var top = lp["top_logprobs"]![t]!.AsObject();
                Assert.Equal(3, top.Count);
                Assert.All(top, kv => Assert.StartsWith("token_id:", kv.Key));
                float chosen = lp["token_logprobs"]![t]!.GetValue<float>();
                Assert.True(top.Max(kv => kv.Value!.GetValue<float>()) >= chosen - 1e-6f, "the best alternative is at least as likely as the chosen token");
            }
            sequences.Add(ids);
        }
        Assert.True(sequences.Skip(1).Take(2).Any(s => !s.SequenceEqual(sequences[0])), "n = 3 samples of one prompt should not all be identical");

        // The same sequences scored by `finealign logprobs`.
        using var tmp = TestPaths.NewTempDir();
        string input = Path.Combine(tmp.Path, "in.jsonl");
        CommandFixtures.WriteLines(input, sequences.Select(s => $"{{\"input_ids\": [{string.Join(",", s)}]}}").ToArray());
        var cli = CliRunner.Run("logprobs", "--model", h.ModelDir, "--input", input);
        Assert.True(cli.Code == 0, cli.Err);
        var scored = CommandFixtures.ParseJsonl(cli.Out);
        for (int c = 0; c < 6; c++)
        {
            float[] want = CommandFixtures.Floats(scored[c]["token_logprobs"]);
            var got = choices[c]!["logprobs"]!["token_logprobs"]!.AsArray();
            Assert.Equal(want.Length + 1, got.Count);
            for (int t = 0; t < want.Length; t++)
                Assert.True(Math.Abs(got[t + 1]!.GetValue<float>() - want[t]) <= 1e-5, $"choice {c} token {t + 1}: {got[t + 1]} vs {want[t]}");
        }
    }

    [Fact]
    public async Task Same_seed_same_completion_and_stop_strings_cut_the_text()
    {
        await using var h = await StartAsync();
        var body = () => new JsonObject { ["prompt"] = "abc", ["max_tokens"] = 30, ["seed"] = 42, ["temperature"] = 1.0, ["ignore_eos"] = true };
        string a = (await h.CompleteAsync(body()))["choices"]![0]!["text"]!.GetValue<string>();
        string b = (await h.CompleteAsync(body()))["choices"]![0]!["text"]!.GetValue<string>();
        Assert.Equal(a, b);
        // Stop at a character the unstopped completion contains: the text ends right before its first occurrence.
        string stop = a.FirstOrDefault(ch => ch is >= ' ' and <= '~' && a.IndexOf(ch) > 0).ToString();
        Assert.NotEqual("\0", stop);
        var stopped = body();
        stopped["stop"] = new JsonArray(stop, "\u0001never");
        var c = (await h.CompleteAsync(stopped))["choices"]![0]!;
        Assert.Equal(a[..a.IndexOf(stop, StringComparison.Ordinal)], c["text"]!.GetValue<string>());
        Assert.Equal("stop", c["finish_reason"]!.GetValue<string>());
        Assert.Equal(stop, c["stop_reason"]!.GetValue<string>());
    }

    [Fact]
    public async Task Chat_uses_the_models_chat_template_and_returns_logprobs()
    {
        await using var h = await StartAsync();
        var tok = new ByteTokenizer();
        var messages = new List<ChatMessage> { new SystemChatMessage("Be brief."), new UserChatMessage("Hi there") };
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 10, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 };
        var completion = (await h.Chat.CompleteChatAsync(messages, options)).Value;

        int[] prompt = ChatTemplates.EncodePrompt(tok, ChatFormat.ChatML,
            [new FineAlign.Text.ChatMessage("system", "Be brief."), new FineAlign.Text.ChatMessage("user", "Hi there")]);
        using var model = h.LoadModel();
        var want = TextGenerator.Generate(model, [prompt], Greedy(10) with { EosTokenIds = [257, 260] }, tok)[0];   // eos and <|im_end|>
        Assert.Equal(want.Text, completion.Content.Count == 0 ? "" : completion.Content[0].Text);
        Assert.Equal(ChatMessageRole.Assistant, completion.Role);
        Assert.Equal(prompt.Length, completion.Usage.InputTokenCount);
        Assert.Equal(want.Tokens.Length, completion.Usage.OutputTokenCount);
        Assert.Equal(want.Tokens.Length, completion.ContentTokenLogProbabilities.Count);
        Assert.All(completion.ContentTokenLogProbabilities, t => Assert.Equal(2, t.TopLogProbabilities.Count));
        // Greedy: the chosen token is the most likely one.
        Assert.All(completion.ContentTokenLogProbabilities, t => Assert.Equal(t.TopLogProbabilities[0].LogProbability, t.LogProbability, 5));
    }

    [Fact]
    public async Task Streamed_chat_reassembles_to_the_non_streamed_text_with_the_same_seed()
    {
        await using var h = await StartAsync();
        var messages = new List<ChatMessage> { new UserChatMessage("Tell me a story") };
        ChatCompletionOptions Options() => new() { Temperature = 1.0f, MaxOutputTokenCount = 24, Seed = 9 };
        var whole = (await h.Chat.CompleteChatAsync(messages, Options())).Value;
        var text = new StringBuilder();
        int updates = 0;
        ChatFinishReason? finish = null;
        await foreach (var u in h.Chat.CompleteChatStreamingAsync(messages, Options()))
        {
            updates++;
            foreach (var part in u.ContentUpdate) text.Append(part.Text);
            finish ??= u.FinishReason;
        }
        string expected = whole.Content.Count == 0 ? "" : whole.Content[0].Text;
        Assert.Equal(expected, text.ToString());
        Assert.Equal(whole.FinishReason, finish);
        Assert.True(updates >= 3 || expected.Length < 3, $"{updates} updates for {expected.Length} characters: not streamed");

        // Raw stream: OpenAI's chunk objects, then data: [DONE].
        var body = new JsonObject { ["model"] = Name, ["messages"] = new JsonArray(new JsonObject { ["role"] = "user", ["content"] = "Tell me a story" }),
                                    ["max_tokens"] = 5, ["stream"] = true, ["stream_options"] = new JsonObject { ["include_usage"] = true } };
        using var response = await h.Http.PostAsync("/v1/chat/completions", new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json"));
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType!.MediaType);
        var events = (await response.Content.ReadAsStringAsync()).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("data: [DONE]", events[^1]);
        Assert.All(events[..^1], e => Assert.StartsWith("data: {", e));
        var chunks = events[..^1].Select(e => JsonNode.Parse(e["data: ".Length..])!).ToList();
        Assert.All(chunks, c => Assert.Equal("chat.completion.chunk", c["object"]!.GetValue<string>()));
        Assert.Equal("assistant", chunks[0]["choices"]![0]!["delta"]!["role"]!.GetValue<string>());
        Assert.NotNull(chunks[^1]["usage"]);
    }

    [Fact]
    public async Task Eight_concurrent_requests_are_all_answered_in_shared_batches_with_the_unbatched_results()
    {
        await using var h = await StartAsync(o => o with { MaxConcurrency = 8, BatchWindow = TimeSpan.FromMilliseconds(50) });
        var tok = new ByteTokenizer();
        string[] prompts = Enumerable.Range(0, 8).Select(i => $"prompt number {i}{new string('!', i)}").ToArray();
        var tasks = prompts.Select(p => Task.Run(() => h.CompleteAsync(new JsonObject { ["prompt"] = p, ["max_tokens"] = 16, ["temperature"] = 0 }))).ToArray();
        var results = await Task.WhenAll(tasks);

        using var model = h.LoadModel();
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = TextGenerator.Generate(model, [[256, .. tok.Encode(prompts[i])]], Greedy(16), tok)[0];
            Assert.Equal(alone.Text, results[i]["choices"]![0]!["text"]!.GetValue<string>());
        }
        double batches = await h.MetricAsync("batches_total");
        double mostRequests = await h.MetricAsync("batch_requests_max");
        Assert.True(mostRequests >= 2, $"no batch served two requests ({batches} batches)");
        Assert.True(batches < 8, $"{batches} batches for 8 requests: nothing was batched");
        Assert.Equal(8, await h.MetricAsync("requests_total"));
    }

    [Fact]
    public async Task Requests_over_max_concurrency_get_429_while_one_is_in_flight()
    {
        await using var h = await StartAsync(o => o with { MaxConcurrency = 1 }, context: 256);
        var first = h.PostAsync("/v1/completions", """{"prompt": [256, 65], "max_tokens": 80, "ignore_eos": true}""");
        var deadline = DateTime.UtcNow.AddSeconds(10);
        while (h.Server.Metrics.InFlight == 0 && DateTime.UtcNow < deadline) await Task.Delay(5);
        var (status, body) = await h.PostAsync("/v1/completions", """{"prompt": [256, 66], "max_tokens": 1}""");
        Assert.Equal(429, status);
        Assert.Contains("limit of 1", body!["error"]!["message"]!.GetValue<string>());
        Assert.Equal(200, (await first).Status);
    }

    [Fact]
    public async Task Bad_requests_get_OpenAI_error_bodies_with_the_right_status()
    {
        await using var h = await StartAsync();
        var (s, b) = await h.PostAsync("/v1/completions", """{"model": "tiny", "prompt": "x", """);
        Assert.Equal(400, s);
        Assert.Contains("could not parse the JSON body", b!["error"]!["message"]!.GetValue<string>());
        Assert.Equal("invalid_request_error", b["error"]!["type"]!.GetValue<string>());

        (s, b) = await h.PostAsync("/v1/chat/completions", "[1, 2]");
        Assert.Equal(400, s);
        Assert.Contains("must be a JSON object", b!["error"]!["message"]!.GetValue<string>());

        foreach (var (json, param) in new[]
        {
            ("""{"prompt": "x", "temperature": -1}""", "temperature"),
            ("""{"prompt": "x", "top_p": 1.5}""", "top_p"),
            ("""{"prompt": "x", "n": 0}""", "n"),
            ("""{"prompt": "x", "max_tokens": "ten"}""", "max_tokens"),
            ("""{"prompt": "x", "logprobs": 50}""", "logprobs"),
            ("""{"prompt": [256, 9999]}""", "prompt"),
            ("""{"prompt": "x", "presence_penalty": 0.5}""", "presence_penalty"),
            ("""{"max_tokens": 3}""", "prompt"),
        })
        {
            (s, b) = await h.PostAsync("/v1/completions", json);
            Assert.True(s == 400, $"{json}: {s}");
            Assert.Equal(param, b!["error"]!["param"]!.GetValue<string>());
            Assert.False(string.IsNullOrWhiteSpace(b["error"]!["message"]!.GetValue<string>()));
        }

        (s, b) = await h.PostAsync("/v1/completions", """{"model": "gpt-4", "prompt": "x"}""");
        Assert.Equal(404, s);
        Assert.Equal("model_not_found", b!["error"]!["code"]!.GetValue<string>());
        Assert.Contains("gpt-4", b["error"]!["message"]!.GetValue<string>());

        // Oversized prompt: 400 naming the limit, for completions and chat; the SDK surfaces the status.
        string longPrompt = new('a', 120);
        (s, b) = await h.PostAsync("/v1/completions", new JsonObject { ["prompt"] = longPrompt, ["max_tokens"] = 4 }.ToJsonString());
        Assert.Equal(400, s);
        Assert.Contains("maximum context length is 96 tokens", b!["error"]!["message"]!.GetValue<string>());
        Assert.Equal("context_length_exceeded", b["error"]!["code"]!.GetValue<string>());
        (s, b) = await h.PostAsync("/v1/completions", """{"prompt": [256, 65], "max_tokens": 95}""");
        Assert.Equal(400, s);
        Assert.Contains("you requested 97 tokens (2 in the prompt, 95 for the completion)", b!["error"]!["message"]!.GetValue<string>());
        var e = await Assert.ThrowsAsync<ClientResultException>(() => h.Chat.CompleteChatAsync(new UserChatMessage(longPrompt)));
        Assert.Equal(400, e.Status);
        Assert.Contains("maximum context length is 96", e.Message);

        var unknown = new ChatClient("no-such-model", new ApiKeyCredential("x"), new OpenAI.OpenAIClientOptions { Endpoint = new Uri(h.Server.BaseAddress, "v1") });
        var e404 = await Assert.ThrowsAsync<ClientResultException>(() => unknown.CompleteChatAsync(new UserChatMessage("hi")));
        Assert.Equal(404, e404.Status);
    }

    [Fact]
    public async Task Api_key_is_required_on_v1_routes()
    {
        await using var h = await StartAsync(o => o with { ApiKey = "s3cret" });
        using var anonymous = new HttpClient { BaseAddress = h.Server.BaseAddress };
        var r = await anonymous.GetAsync("/v1/models");
        Assert.Equal(401, (int)r.StatusCode);
        Assert.Equal("invalid_api_key", JsonNode.Parse(await r.Content.ReadAsStringAsync())!["error"]!["code"]!.GetValue<string>());
        anonymous.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", "wrong");
        Assert.Equal(401, (int)(await anonymous.PostAsync("/v1/completions", new StringContent("{}"))).StatusCode);
        Assert.Equal(200, (int)(await anonymous.GetAsync("/health")).StatusCode);   // probes need no key

        var wrongSdk = new ChatClient(Name, new ApiKeyCredential("wrong"), new OpenAI.OpenAIClientOptions { Endpoint = new Uri(h.Server.BaseAddress, "v1") });
        Assert.Equal(401, (await Assert.ThrowsAsync<ClientResultException>(() => wrongSdk.CompleteChatAsync(new UserChatMessage("hi")))).Status);
        var ok = (await h.Chat.CompleteChatAsync([new UserChatMessage("hi")], new ChatCompletionOptions { MaxOutputTokenCount = 3 })).Value;
        Assert.True(ok.Usage.OutputTokenCount is >= 1 and <= 3);
    }

    [Fact]
    public async Task Shutdown_finishes_the_request_in_flight_then_refuses_new_ones()
    {
        var h = await StartAsync(context: 256);
        try
        {
            var inFlight = h.PostAsync("/v1/completions", """{"prompt": [256, 65], "max_tokens": 120, "ignore_eos": true, "return_tokens_as_token_ids": true, "logprobs": 0}""");
            var deadline = DateTime.UtcNow.AddSeconds(10);
            while (h.Server.Metrics.InFlight == 0 && DateTime.UtcNow < deadline) await Task.Delay(5);
            Assert.Equal(1, h.Server.Metrics.InFlight);
            Assert.False(inFlight.IsCompleted);
            h.Server.Lifetime.StopApplication();                   // what SIGTERM / Ctrl+C do under the console lifetime
            var stop = h.Server.StopAsync();
            var (status, body) = await inFlight;
            Assert.Equal(200, status);
            Assert.Equal(120, body!["choices"]![0]!["logprobs"]!["tokens"]!.AsArray().Count);
            await stop;
            await Assert.ThrowsAsync<HttpRequestException>(() => h.Http.GetAsync("/health"));
        }
        finally
        {
            await h.DisposeAsync();
        }
    }

    [Fact]
    public async Task Reload_weights_swaps_in_the_model_written_to_the_folder()
    {
        await using var h = await StartAsync();
        var request = new JsonObject { ["prompt"] = new JsonArray(256, 72, 105), ["max_tokens"] = 12, ["temperature"] = 0, ["ignore_eos"] = true, ["return_tokens_as_token_ids"] = true, ["logprobs"] = 0 };
        int[] before = TokenIds((await h.CompleteAsync(request.DeepClone().AsObject()))["choices"]![0]!["logprobs"]!["tokens"]);

        CommandFixtures.SaveByteModel(h.ModelDir, seed: 99, context: 96);   // a "trainer" writes new weights
        var (status, body) = await h.PostAsync("/v1/reload_weights", "");
        Assert.Equal(200, status);
        Assert.Equal("ok", body!["status"]!.GetValue<string>());
        int[] after = TokenIds((await h.CompleteAsync(request.DeepClone().AsObject()))["choices"]![0]!["logprobs"]!["tokens"]);

        using var fresh = h.LoadModel();
        var want = TextGenerator.Generate(fresh, [[256, 72, 105]], Greedy(12) with { EosTokenIds = [] })[0];
        Assert.Equal(want.Tokens, after);
        Assert.NotEqual(before, after);
        Assert.Equal(1, await h.MetricAsync("reloads_total"));

        (status, body) = await h.PostAsync("/v1/reload_weights", """{"model_path": "/no/such/folder"}""");
        Assert.Equal(400, status);
        Assert.Contains("still serving the previous weights", body!["error"]!["message"]!.GetValue<string>());
    }

    [Fact]
    public async Task Lora_adapter_loads_under_its_own_name_serves_base_plus_adapter_and_unloads()
    {
        await using var h = await StartAsync();
        string adapterDir = Path.Combine(Path.GetDirectoryName(h.ModelDir)!, "adapter");
        using (var tuned = h.LoadModel())
        {
            // PEFT initialises B to 0 (a no-op adapter); a non-zero B makes the served difference visible.
            Lora.Apply(tuned, new LoraSettings { R = 4, Alpha = 8 }, seed: 3);
            using (TorchSharp.torch.no_grad())
                foreach (var (_, proj) in Lora.Projections(tuned))
                    if (proj.Adapter is var (_, b)) b.copy_(TorchSharp.torch.randn(b.shape, generator: new TorchSharp.torch.Generator(7)) * 0.5);
            Directory.CreateDirectory(adapterDir);
            Lora.WriteAdapter(tuned, adapterDir);
        }
        var (status, body) = await h.PostAsync("/v1/load_lora_adapter", $$"""{"lora_name": "tuned", "lora_path": {{System.Text.Json.JsonSerializer.Serialize(adapterDir)}}}""");
        Assert.True(status == 200, body?.ToJsonString());
        var models = (await h.Http.GetFromJsonAsync<JsonObject>("/v1/models"))!["data"]!.AsArray().Select(m => m!["id"]!.GetValue<string>()).ToList();
        Assert.Contains("tuned", models);

        JsonObject Request(string model) => new() { ["model"] = model, ["prompt"] = new JsonArray(256, 72, 105), ["max_tokens"] = 10, ["temperature"] = 0, ["ignore_eos"] = true, ["return_tokens_as_token_ids"] = true, ["logprobs"] = 0 };
        int[] viaAdapter = TokenIds((await h.CompleteAsync(Request("tuned")))["choices"]![0]!["logprobs"]!["tokens"]);
        int[] viaBase = TokenIds((await h.CompleteAsync(Request(Name)))["choices"]![0]!["logprobs"]!["tokens"]);
        using var merged = ModelIO.LoadMerged(h.ModelDir, adapterDir);
        using var plain = h.LoadModel();
        var wantMerged = TextGenerator.Generate(merged, [[256, 72, 105]], Greedy(10) with { EosTokenIds = [] })[0].Tokens;
        var wantBase = TextGenerator.Generate(plain, [[256, 72, 105]], Greedy(10) with { EosTokenIds = [] })[0].Tokens;
        Assert.Equal(wantMerged, viaAdapter);
        Assert.Equal(wantBase, viaBase);
        Assert.NotEqual(wantBase, wantMerged);

        (status, _) = await h.PostAsync("/v1/load_lora_adapter", $$"""{"lora_name": "tuned", "lora_path": {{System.Text.Json.JsonSerializer.Serialize(adapterDir)}}}""");
        Assert.Equal(400, status);   // already loaded (vLLM's answer too)
        (status, _) = await h.PostAsync("/v1/unload_lora_adapter", """{"lora_name": "tuned"}""");
        Assert.Equal(200, status);
        (status, _) = await h.PostAsync("/v1/completions", Request("tuned").ToJsonString());
        Assert.Equal(404, status);
        (status, body) = await h.PostAsync("/v1/load_lora_adapter", """{"lora_name": "x", "lora_path": "/no/such/adapter"}""");
        Assert.Equal(400, status);
        Assert.Contains("not a LoRA adapter folder", body!["error"]!["message"]!.GetValue<string>());
    }
}
