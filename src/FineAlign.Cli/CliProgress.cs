using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace FineAlign.Cli;

/// <summary>
/// Renders library <see cref="ProgressUpdate"/>s: Spectre.Console bars with ETA when <paramref name="output"/> is an
/// interactive terminal, otherwise plain log lines (CI logs, pipes): the first and last step of each stage, a line at
/// most every <c>logInterval</c> (default <see cref="DefaultLogInterval"/>) per stage, and a heartbeat repeating the last
/// line when a slow step has been silent for 1.2× that long, so piped output never goes quiet for more than ~3 s.
/// <code>int n = CliProgress.Run(recipe.Out, progress => trainer.Train(..., progress));</code>
/// </summary>
public static class CliProgress
{
    public static bool IsInteractive(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    /// <summary>Piped progress prints at least this often while work runs.</summary>
    public static readonly TimeSpan DefaultLogInterval = TimeSpan.FromSeconds(2.5);

    public static T Run<T>(TextWriter output, Func<IProgress<ProgressUpdate>, T> work, TimeSpan? logInterval = null)
    {
        if (!IsInteractive(output))
        {
            using var plain = new PlainProgress(output, logInterval ?? DefaultLogInterval, heartbeat: true);
            return work(plain);
        }
        return AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx => work(new SpectreProgress(ctx)));
    }

    public static async Task<T> RunAsync<T>(TextWriter output, Func<IProgress<ProgressUpdate>, Task<T>> work, TimeSpan? logInterval = null)
    {
        if (!IsInteractive(output))
        {
            using var plain = new PlainProgress(output, logInterval ?? DefaultLogInterval, heartbeat: true);
            return await work(plain);
        }
        return await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .StartAsync(ctx => work(new SpectreProgress(ctx)));
    }

    /// <summary>"train 120/1000 loss 2.3456" — the text both renderers show.</summary>
    public static string Describe(ProgressUpdate u)
    {
        var s = new System.Text.StringBuilder(u.Stage);
        s.Append(' ').Append(u.Step.ToString(CultureInfo.InvariantCulture));
        if (u.Total > 0) s.Append('/').Append(u.Total.ToString(CultureInfo.InvariantCulture));
        if (u.Loss is { } loss) s.Append(" loss ").Append(loss.ToString("F4", CultureInfo.InvariantCulture));
        if (u.Metrics is { } metrics)
            foreach (var (name, value) in metrics)
                s.Append(' ').Append(name).Append(' ').Append(value.ToString("G5", CultureInfo.InvariantCulture));
        return s.ToString();
    }

    /// <summary>Synchronous reporter (unlike <see cref="Progress{T}"/>, which posts to the thread pool and may reorder).</summary>
    private sealed class SpectreProgress(ProgressContext context) : IProgress<ProgressUpdate>
    {
        private readonly Dictionary<string, ProgressTask> _tasks = [];

        public void Report(ProgressUpdate u)
        {
            lock (_tasks)
            {
                if (!_tasks.TryGetValue(u.Stage, out var task))
                    _tasks[u.Stage] = task = context.AddTask(Markup.Escape(u.Stage), autoStart: true, maxValue: Math.Max(1, u.Total));
                if (u.Total > 0) task.MaxValue = u.Total;
                task.Value = u.Step;
                task.Description = Markup.Escape(Describe(u));
                if (u.Total > 0 && u.Step >= u.Total) task.StopTask();
            }
        }
    }
}

/// <summary>
/// Plain progress lines for redirected output: "[00:01:20] train 120/1000 (12%) loss 2.3456 eta 00:09:40". With
/// <c>heartbeat</c>, a timer repeats the last line ("… still running") when nothing was printed for <c>interval</c>.
/// </summary>
public sealed class PlainProgress : IProgress<ProgressUpdate>, IDisposable
{
    private readonly TextWriter _output;
    private readonly TimeSpan _interval;
    private readonly Dictionary<string, (Stopwatch Clock, TimeSpan LastLog, long FirstStep)> _stages = [];
    private readonly Stopwatch _total = Stopwatch.StartNew();
    private readonly Timer? _heartbeat;
    private TimeSpan _lastLine;
    private ProgressUpdate? _last;

    public PlainProgress(TextWriter output, TimeSpan interval, bool heartbeat = false)
    {
        _output = output;
        _interval = interval;
        if (heartbeat && interval > TimeSpan.Zero)
            _heartbeat = new Timer(_ => Beat(), null, interval, TimeSpan.FromMilliseconds(Math.Max(100, interval.TotalMilliseconds / 5)));
    }

    public void Report(ProgressUpdate u)
    {
        lock (_stages)
        {
            bool first = !_stages.TryGetValue(u.Stage, out var st);
            if (first) st = (Stopwatch.StartNew(), TimeSpan.Zero, u.Step);
            TimeSpan now = st.Clock.Elapsed;
            bool last = u.Total > 0 && u.Step >= u.Total;
            _last = last ? null : u;
            if (!first && !last && now - st.LastLog < _interval) return;
            _stages[u.Stage] = (st.Clock, now, st.FirstStep);
            Write(u, st, now, last, "");
        }
    }

    // A slow step (a long generation, a checkpoint) would leave a pipe silent: repeat the last line with the time.
    private void Beat()
    {
        lock (_stages)
        {
            // 1.2 × the interval: a step that reports just after the interval prints its own line, not a heartbeat first.
            if (_last is not { } u || _total.Elapsed - _lastLine < _interval * 1.2 || !_stages.TryGetValue(u.Stage, out var st)) return;
            Write(u, st, st.Clock.Elapsed, false, " (still running)");
        }
    }

    private void Write(ProgressUpdate u, (Stopwatch Clock, TimeSpan LastLog, long FirstStep) st, TimeSpan now, bool last, string suffix)
    {
        var line = new System.Text.StringBuilder();
        line.Append('[').Append(Clock(_total.Elapsed)).Append("] ").Append(CliProgress.Describe(u));
        if (u.Total > 0)
        {
            line.Append(" (").Append((100.0 * u.Step / u.Total).ToString("F0", CultureInfo.InvariantCulture)).Append("%)");
            long done = u.Step - st.FirstStep;
            if (!last && done > 0)
                line.Append(" eta ").Append(Clock(TimeSpan.FromTicks((long)(now.Ticks / (double)done * (u.Total - u.Step)))));
        }
        line.Append(suffix);
        try
        {
            _output.WriteLine(line.ToString());
            _output.Flush();
        }
        catch (ObjectDisposedException) { }
        _lastLine = _total.Elapsed;
    }

    public void Dispose()
    {
        if (_heartbeat is null) return;
        using var done = new ManualResetEvent(false);
        if (_heartbeat.Dispose(done)) done.WaitOne();
    }

    private static string Clock(TimeSpan t) =>
        $"{(int)t.TotalHours:D2}:{t.Minutes:D2}:{t.Seconds:D2}";
}
