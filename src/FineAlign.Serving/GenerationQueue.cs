using System.Collections.Concurrent;
using System.Threading.Channels;
using FineAlign.Generation;
using FineAlign.Text;

namespace FineAlign.Serving;

/// <summary>
/// How one request samples. Rows of requests with equal settings share a generation call; a seeded sampling request
/// shares it with nobody, so the same request with the same seed gives the same tokens whatever else is being served.
/// </summary>
internal sealed record Sampling(bool Greedy, double Temperature, double TopP, int TopK, long? Seed, string[] Stops, int[] Eos);

/// <summary>What a finished request gets back: one sequence per row (and its scores when log-probs were asked).</summary>
internal sealed record JobResult(GeneratedSequence[] Sequences, TokenScores?[] Scores, TextTokenizer? Tokenizer);

/// <summary>One request's generation work: its rows (prompt × n) and how to decode and score them.</summary>
internal sealed class GenerationJob
{
    private static long _nextId;

    public GenerationJob(string model, IReadOnlyList<int[]> rows, int maxNewTokens, Sampling sampling, int logprobs, bool scorePrompt, bool stream,
                         CancellationToken aborted)
    {
        Model = model;
        Rows = rows;
        MaxNewTokens = maxNewTokens;
        Sampling = sampling;
        Logprobs = logprobs;
        ScorePrompt = scorePrompt;
        Aborted = aborted;
        if (stream) Tokens = Channel.CreateUnbounded<(int Row, int Token)>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        Results = new GeneratedSequence[rows.Count];
        Scores = new TokenScores?[rows.Count];
        Remaining = rows.Count;
        string stops = string.Join("\u0001", sampling.Stops), eos = string.Join(",", sampling.Eos);
        BatchKey = model + "\u0002" + (sampling.Greedy ? $"greedy|{stops}|{eos}"
            : sampling.Seed is not null ? $"seeded|{Id}"
            : FormattableString.Invariant($"sample|{sampling.Temperature:R}|{sampling.TopP:R}|{sampling.TopK}|{stops}|{eos}"));
    }

    public long Id { get; } = Interlocked.Increment(ref _nextId);
    /// <summary>The served model name the rows are decoded with.</summary>
    public string Model { get; }
    public IReadOnlyList<int[]> Rows { get; }
    public int MaxNewTokens { get; }
    public Sampling Sampling { get; }
    /// <summary>Top-k alternatives per token, 0 for the chosen token only, -1 for no log-probs (no scoring pass).</summary>
    public int Logprobs { get; }
    /// <summary>Score the prompt tokens too (echo).</summary>
    public bool ScorePrompt { get; }
    public CancellationToken Aborted { get; }
    /// <summary>Tokens as they are chosen (row, token), for streaming; completed when the job is done.</summary>
    public Channel<(int Row, int Token)>? Tokens { get; }
    public TaskCompletionSource<JobResult> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public string BatchKey { get; }

    internal GeneratedSequence[] Results { get; }
    internal TokenScores?[] Scores { get; }
    internal int Remaining;
    internal int Chunks;

    internal void Fail(Exception e)
    {
        Tokens?.Writer.TryComplete();
        Done.TrySetException(e);
    }
}

/// <summary>
/// The batching queue: requests arrive on any thread; one worker thread gathers the rows waiting (for up to the
/// batch window when it was idle), takes up to <c>maxBatch</c> rows with the same sampling settings that fit the
/// context together, and decodes them in one <see cref="TextGenerator.Generate(FineAlign.Models.CausalLM, IReadOnlyList{int[]}, GenerationOptions, TextTokenizer?)"/>
/// call (static batching: a request arriving mid-batch waits for the next one). Several named models can be served
/// (the base model and any added later); a batch holds rows of one model. A model swap (reload, add, remove) is
/// applied between batches, so no batch ever sees two versions of a model.
/// </summary>
internal sealed class GenerationQueue : IDisposable
{
    private sealed record Swap(string Name, ServedModel? Model, TaskCompletionSource Done);

    private readonly Channel<object> _incoming = Channel.CreateUnbounded<object>(new UnboundedChannelOptions { SingleReader = true });
    private readonly List<(GenerationJob Job, int Row)> _pending = [];
    private readonly int _maxBatch;
    private readonly TimeSpan _window;
    private readonly Thread _thread;
    private readonly Random _seeds = new();
    private readonly TaskCompletionSource _stopped = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly ConcurrentDictionary<string, ServedModel> _models = new();

    public GenerationQueue(string baseName, ServedModel model, int maxBatch, TimeSpan window, ServerMetrics metrics)
    {
        BaseName = baseName;
        _models[baseName] = model;
        _maxBatch = maxBatch;
        _window = window;
        Metrics = metrics;
        _thread = new Thread(Loop) { IsBackground = true, Name = "finealign-generation" };
        _thread.Start();
    }

    public ServerMetrics Metrics { get; }

    /// <summary>The name of the model the server was started with.</summary>
    public string BaseName { get; }

    /// <summary>The base model as the next batch will use it.</summary>
    public ServedModel Current => _models[BaseName];

    /// <summary>A served model by name (as the next batch will use it), or null.</summary>
    public ServedModel? Get(string name) => _models.TryGetValue(name, out var m) ? m : null;

    /// <summary>Every served model, the base one first.</summary>
    public IReadOnlyList<KeyValuePair<string, ServedModel>> All =>
        _models.OrderBy(kv => kv.Key == BaseName ? 0 : 1).ThenBy(kv => kv.Key, StringComparer.Ordinal).ToList();

    public void Enqueue(GenerationJob job)
    {
        if (!_incoming.Writer.TryWrite(job))
            job.Fail(new ApiException(503, "the server is shutting down", type: "server_error"));
    }

    /// <summary>
    /// Serves <paramref name="model"/> as <paramref name="name"/> from the next batch on (null: stops serving that name);
    /// completes once the previous model of that name is released.
    /// </summary>
    public Task SwapAsync(string name, ServedModel? model)
    {
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        if (!_incoming.Writer.TryWrite(new Swap(name, model, done)))
        {
            model?.Dispose();
            done.SetException(new ApiException(503, "the server is shutting down", type: "server_error"));
        }
        return done.Task;
    }

    /// <summary>Accepts no more work, finishes every queued row, then stops the worker.</summary>
    public Task CompleteAsync()
    {
        _incoming.Writer.TryComplete();
        return _stopped.Task;
    }

    private void Loop()
    {
        try
        {
            var reader = _incoming.Reader;
            while (true)
            {
                if (_pending.Count == 0)
                {
                    if (!reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult()) break;
                    Drain();
                    // Idle until now: give requests sent together a moment to arrive together.
                    if (_window > TimeSpan.Zero && _pending.Count is > 0 && _pending.Count < _maxBatch)
                    {
                        Thread.Sleep(_window);
                        Drain();
                    }
                }
                else Drain();
                var batch = Take();
                if (batch.Count > 0) Run(batch);
            }
        }
        finally
        {
            foreach (var (job, _) in _pending) job.Fail(new ApiException(503, "the server stopped", type: "server_error"));
            _stopped.TrySetResult();
        }
    }

    private void Drain()
    {
        while (_incoming.Reader.TryRead(out var item))
        {
            if (item is GenerationJob job)
                for (int r = 0; r < job.Rows.Count; r++) _pending.Add((job, r));
            else if (item is Swap swap)
            {
                _models.TryGetValue(swap.Name, out var old);
                if (swap.Model is null) _models.TryRemove(swap.Name, out _);
                else _models[swap.Name] = swap.Model;
                old?.Dispose();
                if (swap.Name == BaseName) Metrics.Reloads++;
                swap.Done.TrySetResult();
            }
        }
    }

    /// <summary>The next batch: rows in arrival order with the first row's settings, up to the batch size and context.</summary>
    private List<(GenerationJob Job, int Row)> Take()
    {
        var batch = new List<(GenerationJob Job, int Row)>();
        _pending.RemoveAll(p =>
        {
            if (!p.Job.Aborted.IsCancellationRequested) return false;
            p.Job.Tokens?.Writer.TryComplete();
            p.Job.Done.TrySetCanceled(p.Job.Aborted);
            return true;
        });
        if (_pending.Count == 0) return batch;
        string key = _pending[0].Job.BatchKey;
        int context = Get(_pending[0].Job.Model)?.Context ?? int.MaxValue, maxPrompt = 0, maxNew = 0;
        for (int i = 0; i < _pending.Count && batch.Count < _maxBatch; i++)
        {
            var p = _pending[i];
            if (p.Job.BatchKey != key) continue;
            int prompt = Math.Max(maxPrompt, p.Job.Rows[p.Row].Length), nw = Math.Max(maxNew, p.Job.MaxNewTokens);
            if (batch.Count > 0 && prompt + nw > context) continue;   // left padding: the batch needs the longest prompt + the most new tokens
            maxPrompt = prompt;
            maxNew = nw;
            batch.Add(p);
        }
        var taken = batch.ToHashSet();
        _pending.RemoveAll(taken.Contains);
        return batch;
    }

    private void Run(List<(GenerationJob Job, int Row)> batch)
    {
        var jobs = batch.Select(b => b.Job).Distinct().ToList();
        try
        {
            var served = Get(batch[0].Job.Model)
                         ?? throw new ApiException(404, $"The model '{batch[0].Job.Model}' is no longer served.", "model", "model_not_found");
            var s = batch[0].Job.Sampling;
            int maxNew = batch.Max(b => b.Job.MaxNewTokens);
            long seed = s.Greedy ? 0
                : s.Seed is long fixedSeed ? unchecked(fixedSeed + batch[0].Job.Chunks++)   // a request split over batches: seed, seed+1, ...
                : _seeds.NextInt64();
            var counts = new int[batch.Count];
            var options = new GenerationOptions
            {
                MaxNewTokens = maxNew,
                DoSample = !s.Greedy,
                Temperature = s.Greedy ? 1.0 : s.Temperature,
                TopP = s.TopP,
                TopK = s.TopK,
                Seed = seed,
                EosTokenIds = s.Eos,
                StopStrings = s.Stops.Length > 0 ? s.Stops : null,
                OnToken = jobs.Any(j => j.Tokens is not null) ? (row, token) =>
                {
                    var (job, r) = batch[row];
                    if (++counts[row] <= job.MaxNewTokens) job.Tokens?.Writer.TryWrite((r, token));
                } : null,
            };
            var started = DateTime.UtcNow;
            var outs = TextGenerator.Generate(served.Model, batch.Select(b => b.Job.Rows[b.Row]).ToList(), options, served.Tokenizer);

            var results = new GeneratedSequence[batch.Count];
            for (int i = 0; i < batch.Count; i++) results[i] = Cut(outs[i], batch[i].Job.MaxNewTokens, served.Tokenizer);

            var toScore = Enumerable.Range(0, batch.Count).Where(i => batch[i].Job.Logprobs >= 0).ToList();
            var scores = TokenScorer.Score(served.Model, toScore.Select(i =>
            {
                var (job, r) = batch[i];
                int[] prompt = job.Rows[r];
                return ((int[])[.. prompt, .. results[i].Tokens], job.ScorePrompt ? 1 : prompt.Length, job.Logprobs);
            }).ToList());

            Metrics.RecordBatch(batch.Count, jobs.Count, results.Sum(r => (long)r.Tokens.Length), (DateTime.UtcNow - started).TotalSeconds);
            for (int k = 0; k < toScore.Count; k++) batch[toScore[k]].Job.Scores[batch[toScore[k]].Row] = scores[k];
            for (int i = 0; i < batch.Count; i++)
            {
                var (job, r) = batch[i];
                job.Results[r] = results[i];
                if (--job.Remaining == 0)
                {
                    job.Tokens?.Writer.TryComplete();
                    job.Done.TrySetResult(new JobResult(job.Results, job.Scores, served.Tokenizer));
                }
            }
        }
        catch (Exception e)
        {
            Metrics.BatchErrors++;
            var error = e is ApiException api ? api : e is FineAlignException ? new ApiException(400, e.Message)
                : new ApiException(500, $"generation failed: {e.Message}", type: "server_error");
            foreach (var job in jobs) job.Fail(error);
            _pending.RemoveAll(p => jobs.Contains(p.Job));
        }
    }

    /// <summary>A row of a batch decoded further than its own max_tokens is cut back to it (causal: same tokens).</summary>
    private static GeneratedSequence Cut(GeneratedSequence g, int max, TextTokenizer? tokenizer)
    {
        if (g.Tokens.Length <= max) return g;
        var tokens = g.Tokens[..max];
        return new GeneratedSequence(g.PromptIds, tokens, g.LogProbs[..max], tokenizer?.Decode(tokens) ?? "", FinishReason.Length);
    }

    /// <summary>Releases every served model (after <see cref="CompleteAsync"/>).</summary>
    public void DisposeModels()
    {
        foreach (var m in _models.Values) m.Dispose();
        _models.Clear();
    }

    public void Dispose()
    {
        _incoming.Writer.TryComplete();
        _thread.Join(TimeSpan.FromSeconds(30));
    }
}
