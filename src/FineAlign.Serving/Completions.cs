using System.Text.Json.Nodes;
using FineAlign.Generation;
using FineAlign.Text;
using Microsoft.AspNetCore.Http;

namespace FineAlign.Serving;

/// <summary>POST /v1/completions and /v1/chat/completions: parse, check against the context, queue, answer (or stream).</summary>
internal static class Completions
{
    /// <summary>Most sequences (prompts × n) one request may ask for.</summary>
    public const int MaxRows = 4096;

    public static async Task HandleCompletionAsync(OpenAiServer server, HttpContext ctx)
    {
        var body = await OpenAiRequest.ReadBodyAsync(ctx.Request.Body, ctx.RequestAborted);
        var (modelName, model) = server.ResolveModel(OpenAiRequest.ModelName(body));
        var req = OpenAiRequest.ParseCompletion(body, model);
        var f = req.Fields;
        if ((long)req.Prompts.Count * f.N > MaxRows)
            throw new ApiException(400, $"{req.Prompts.Count} prompts × n = {f.N} is more than {MaxRows} sequences in one request", "n");
        int maxTokens = f.MaxTokens ?? 16;
        foreach (var p in req.Prompts) CheckContext(model, p.Ids.Length, maxTokens, "prompt");
        if (f.Stops.Length > 0 && model.Tokenizer is null) throw new ApiException(400, "stop strings need a tokenizer; this model folder has none", "stop");

        var rows = req.Prompts.SelectMany(p => Enumerable.Repeat(p.Ids, f.N)).ToList();
        var job = new GenerationJob(modelName, rows, maxTokens, SamplingOf(f, f.IgnoreEos ? [] : model.Eos), req.Logprobs ?? -1,
                                    scorePrompt: req.Echo, stream: f.Stream && req.Logprobs is null, ctx.RequestAborted);
        long promptTokens = req.Prompts.Sum(p => (long)p.Ids.Length);
        server.Metrics.RecordPromptTokens(promptTokens);
        server.Queue.Enqueue(job);

        string id = "cmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        var tok = model.Tokenizer;
        string EchoText(int row) => req.Echo ? req.Prompts[row / f.N].Text ?? tok?.Decode(rows[row]) ?? "" : "";

        if (f.Stream)
        {
            var sse = new ServerSentEvents(ctx);
            JsonObject Chunk(int index, string text, JsonNode? logprobs, string? finish, string? stopReason = null) => new()
            {
                ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = modelName,
                ["choices"] = new JsonArray(new JsonObject
                {
                    ["index"] = index, ["text"] = text, ["logprobs"] = logprobs, ["finish_reason"] = finish, ["stop_reason"] = stopReason,
                }),
            };
            await sse.StartAsync();
            if (req.Echo)
                for (int r = 0; r < rows.Count; r++) await sse.SendAsync(Chunk(r, EchoText(r), null, null));
            var result = await StreamAsync(sse, job, rows.Count, f, tok, (row, delta, entries) =>
            {
                JsonNode? lp = entries is null ? null : OpenAiResponses.CompletionLogprobs(entries, f.TokenIdStrings, tok, 0);
                return Chunk(row, delta, lp, null);
            }, (row, rest, g) => Chunk(row, rest, null, OpenAiResponses.FinishReason(g.FinishReason), OpenAiResponses.StopReason(g, f.Stops, tok)));
            await FinishStreamAsync(sse, f.IncludeUsage ? result : null, id, "text_completion", created, modelName, promptTokens);
            return;
        }

        var done = await job.Done.Task.WaitAsync(ctx.RequestAborted);
        var choices = new JsonArray();
        for (int r = 0; r < rows.Count; r++)
        {
            var g = done.Sequences[r];
            string echo = EchoText(r);
            JsonNode? logprobs = null;
            if (done.Scores[r] is TokenScores s)
                logprobs = OpenAiResponses.CompletionLogprobs(OpenAiResponses.Entries(rows[r], g.Tokens, s, req.Echo), f.TokenIdStrings, tok, 0);
            choices.Add(new JsonObject
            {
                ["index"] = r, ["text"] = echo + g.Text, ["logprobs"] = logprobs,
                ["finish_reason"] = OpenAiResponses.FinishReason(g.FinishReason), ["stop_reason"] = OpenAiResponses.StopReason(g, f.Stops, tok),
            });
        }
        await OpenAiServer.WriteJson(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "text_completion", ["created"] = created, ["model"] = modelName, ["choices"] = choices,
            ["usage"] = OpenAiResponses.Usage(promptTokens, done.Sequences.Sum(s => (long)s.Tokens.Length)),
        });
    }

    public static async Task HandleChatAsync(OpenAiServer server, HttpContext ctx)
    {
        var body = await OpenAiRequest.ReadBodyAsync(ctx.Request.Body, ctx.RequestAborted);
        var (modelName, model) = server.ResolveModel(OpenAiRequest.ModelName(body));
        var req = OpenAiRequest.ParseChat(body);
        var f = req.Fields;
        if (model.Chat is not ChatPrompt chat || model.Tokenizer is not TextTokenizer tok)
            throw new ApiException(400, $"chat is not available for this model: {model.ChatError}" +
                                        (model.Tokenizer is null ? "" : " (start the server with --chat-template chatml|llama2|zephyr)"));
        int[] prompt;
        try { prompt = chat.Encode(req.Messages); }
        catch (FineAlignException e) { throw new ApiException(400, e.Message, "messages"); }
        int maxTokens = f.MaxTokens ?? Math.Max(1, model.Context - prompt.Length);   // at least one token: a full context is an error
        CheckContext(model, prompt.Length, maxTokens, "messages");

        var rows = Enumerable.Repeat(prompt, f.N).ToList();
        int logprobs = req.Logprobs ? req.TopLogprobs : -1;
        var job = new GenerationJob(modelName, rows, maxTokens, SamplingOf(f, f.IgnoreEos ? [] : model.ChatEos), logprobs,
                                    scorePrompt: false, stream: f.Stream && !req.Logprobs, ctx.RequestAborted);
        server.Metrics.RecordPromptTokens(prompt.Length);
        server.Queue.Enqueue(job);

        string id = "chatcmpl-" + Guid.NewGuid().ToString("N");
        long created = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        if (f.Stream)
        {
            var sse = new ServerSentEvents(ctx);
            JsonObject Chunk(int index, JsonObject delta, JsonNode? lp, string? finish) => new()
            {
                ["id"] = id, ["object"] = "chat.completion.chunk", ["created"] = created, ["model"] = modelName,
                ["choices"] = new JsonArray(new JsonObject { ["index"] = index, ["delta"] = delta, ["logprobs"] = lp, ["finish_reason"] = finish }),
            };
            await sse.StartAsync();
            for (int r = 0; r < rows.Count; r++) await sse.SendAsync(Chunk(r, new JsonObject { ["role"] = "assistant", ["content"] = "" }, null, null));
            var result = await StreamAsync(sse, job, rows.Count, f, tok,
                (row, delta, entries) => Chunk(row, new JsonObject { ["content"] = delta },
                                               entries is null ? null : OpenAiResponses.ChatLogprobs(entries, f.TokenIdStrings, tok), null),
                (row, rest, g) => Chunk(row, rest.Length > 0 ? new JsonObject { ["content"] = rest } : new JsonObject(), null,
                                        OpenAiResponses.FinishReason(g.FinishReason)));
            await FinishStreamAsync(sse, f.IncludeUsage ? result : null, id, "chat.completion.chunk", created, modelName, prompt.Length);
            return;
        }

        var done = await job.Done.Task.WaitAsync(ctx.RequestAborted);
        var choices = new JsonArray();
        for (int r = 0; r < rows.Count; r++)
        {
            var g = done.Sequences[r];
            JsonNode? lp = done.Scores[r] is TokenScores s
                ? OpenAiResponses.ChatLogprobs(OpenAiResponses.Entries(prompt, g.Tokens, s, echo: false), f.TokenIdStrings, tok) : null;
            choices.Add(new JsonObject
            {
                ["index"] = r, ["message"] = new JsonObject { ["role"] = "assistant", ["content"] = g.Text },
                ["logprobs"] = lp, ["finish_reason"] = OpenAiResponses.FinishReason(g.FinishReason),
            });
        }
        await OpenAiServer.WriteJson(ctx, new JsonObject
        {
            ["id"] = id, ["object"] = "chat.completion", ["created"] = created, ["model"] = modelName, ["choices"] = choices,
            ["usage"] = OpenAiResponses.Usage(prompt.Length, done.Sequences.Sum(s => (long)s.Tokens.Length)),
        });
    }

    /// <summary>400 naming the limit when prompt + max_tokens exceed the model's context (vLLM's wording).</summary>
    private static void CheckContext(ServedModel model, int promptTokens, int maxTokens, string param)
    {
        int context = model.Context;
        if (promptTokens >= context && maxTokens > 0 || promptTokens > context)
            throw new ApiException(400, $"This model's maximum context length is {context} tokens. However, your prompt has {promptTokens} tokens; " +
                                        $"it must be shorter than {context} tokens to leave room for the completion.", param, "context_length_exceeded");
        if (promptTokens + (long)maxTokens > context)
            throw new ApiException(400, $"This model's maximum context length is {context} tokens. However, you requested {promptTokens + (long)maxTokens} tokens " +
                                        $"({promptTokens} in the prompt, {maxTokens} for the completion). Please reduce the length of the prompt or max_tokens.",
                                   param, "context_length_exceeded");
    }

    private static Sampling SamplingOf(SamplingFields f, int[] eos) =>
        new(f.Temperature <= 0, f.Temperature, f.TopP, f.TopK, f.Seed, f.Stops, eos);

    /// <summary>Ends a stream: the usage chunk when asked for (<paramref name="result"/> non-null), then [DONE].</summary>
    private static async Task FinishStreamAsync(ServerSentEvents sse, JobResult? result, string id, string objectName, long created, string modelName, long promptTokens)
    {
        if (result is not null)
            await sse.SendAsync(new JsonObject
            {
                ["id"] = id, ["object"] = objectName, ["created"] = created, ["model"] = modelName,
                ["choices"] = new JsonArray(), ["usage"] = OpenAiResponses.Usage(promptTokens, result.Sequences.Sum(s => (long)s.Tokens.Length)),
            });
        await sse.DoneAsync();
    }

    /// <summary>
    /// Streams one job: text deltas as tokens are chosen, then each choice's remaining text with its finish reason.
    /// With log-probs (computed by a scoring pass after decoding) the tokens are replayed one chunk per token once
    /// the job is done. Returns null when the job failed (an error event was sent instead).
    /// </summary>
    private static async Task<JobResult?> StreamAsync(ServerSentEvents sse, GenerationJob job, int choices, SamplingFields f, TextTokenizer? tok,
        Func<int, string, IEnumerable<OpenAiResponses.Entry>?, JsonObject> delta, Func<int, string, GeneratedSequence, JsonObject> finish)
    {
        int holdBack = f.Stops.Length == 0 ? 0 : f.Stops.Max(s => s.Length) - 1;
        var streamers = Enumerable.Range(0, choices).Select(_ => new TextStreamer(tok, holdBack)).ToArray();
        if (job.Tokens is { } channel)
        {
            var reader = channel.Reader;
            while (await reader.WaitToReadAsync(sse.Aborted))
            {
                while (reader.TryRead(out var ev))
                {
                    string d = streamers[ev.Row].Push(ev.Token);
                    if (d.Length > 0) await sse.SendAsync(delta(ev.Row, d, null), flush: false);
                }
                await sse.FlushAsync();
            }
        }
        JobResult result;
        try { result = await job.Done.Task.WaitAsync(sse.Aborted); }
        catch (ApiException e)
        {
            await sse.SendAsync(e.ToJson());
            return null;
        }
        for (int r = 0; r < choices; r++)
        {
            var g = result.Sequences[r];
            if (job.Tokens is null && result.Scores[r] is TokenScores s)
            {
                var entries = OpenAiResponses.Entries(job.Rows[r], g.Tokens, s, echo: false);
                foreach (var e in entries)
                    await sse.SendAsync(delta(r, streamers[r].Push(e.Id), [e]), flush: false);
            }
            await sse.SendAsync(finish(r, streamers[r].Finish(g.Text), g));
        }
        return result;
    }
}

/// <summary>A text/event-stream response: one <c>data: {json}</c> event per chunk, closed by <c>data: [DONE]</c> as OpenAI does.</summary>
internal sealed class ServerSentEvents(HttpContext ctx)
{
    public CancellationToken Aborted => ctx.RequestAborted;

    public async Task StartAsync()
    {
        ctx.Response.ContentType = "text/event-stream";
        ctx.Response.Headers.CacheControl = "no-cache";
        ctx.Response.Headers["X-Accel-Buffering"] = "no";
        await ctx.Response.StartAsync(ctx.RequestAborted);
    }

    public async Task SendAsync(JsonNode data, bool flush = true)
    {
        await ctx.Response.WriteAsync("data: " + data.ToJsonString(OpenAiServer.JsonOut) + "\n\n", ctx.RequestAborted);
        if (flush) await FlushAsync();
    }

    public Task FlushAsync() => ctx.Response.Body.FlushAsync(ctx.RequestAborted);

    public async Task DoneAsync()
    {
        await ctx.Response.WriteAsync("data: [DONE]\n\n", ctx.RequestAborted);
        await FlushAsync();
    }
}
