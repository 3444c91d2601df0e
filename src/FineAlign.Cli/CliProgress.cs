using System.Diagnostics;
using System.Globalization;
using Spectre.Console;

namespace FineAlign.Cli;

/// <summary>
/// Renders library <see cref="ProgressUpdate"/>s: Spectre.Console bars with ETA when <paramref name="output"/> is an
/// interactive terminal, otherwise plain log lines at most every <c>logInterval</c> (default 10 s) per stage, plus
/// the first and last step — readable in CI logs.
/// <code>int n = CliProgress.Run(recipe.Out, progress => trainer.Train(..., progress));</code>
/// </summary>
public static class CliProgress
{
    public static bool IsInteractive(TextWriter output) =>
        ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;

    public static T Run<T>(TextWriter output, Func<IProgress<ProgressUpdate>, T> work, TimeSpan? logInterval = null)
    {
        if (!IsInteractive(output))
            return work(new PlainProgress(output, logInterval ?? TimeSpan.FromSeconds(10)));
        return AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(),
                     new ElapsedTimeColumn(), new RemainingTimeColumn(), new SpinnerColumn())
            .Start(ctx => work(new SpectreProgress(ctx)));
    }

    public static Task<T> RunAsync<T>(TextWriter output, Func<IProgress<ProgressUpdate>, Task<T>> work, TimeSpan? logInterval = null)
    {
        if (!IsInteractive(output))
            return work(new PlainProgress(output, logInterval ?? TimeSpan.FromSeconds(10)));
        return AnsiConsole.Progress()
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

/// <summary>Plain progress lines for redirected output: "[00:01:20] train 120/1000 (12%) loss 2.3456 eta 00:09:40".</summary>
public sealed class PlainProgress(TextWriter output, TimeSpan interval) : IProgress<ProgressUpdate>
{
    private readonly Dictionary<string, (Stopwatch Clock, TimeSpan LastLog, long FirstStep)> _stages = [];
    private readonly Stopwatch _total = Stopwatch.StartNew();

    public void Report(ProgressUpdate u)
    {
        lock (_stages)
        {
            bool first = !_stages.TryGetValue(u.Stage, out var st);
            if (first) st = (Stopwatch.StartNew(), TimeSpan.Zero, u.Step);
            TimeSpan now = st.Clock.Elapsed;
            bool last = u.Total > 0 && u.Step >= u.Total;
            if (!first && !last && now - st.LastLog < interval) return;
            _stages[u.Stage] = (st.Clock, now, st.FirstStep);

            var line = new System.Text.StringBuilder();
            line.Append('[').Append(Clock(_total.Elapsed)).Append("] ").Append(CliProgress.Describe(u));
            if (u.Total > 0)
            {
                line.Append(" (").Append((100.0 * u.Step / u.Total).ToString("F0", CultureInfo.InvariantCulture)).Append("%)");
                long done = u.Step - st.FirstStep;
                if (!last && done > 0)
                    line.Append(" eta ").Append(Clock(TimeSpan.FromTicks((long)(now.Ticks / (double)done * (u.Total - u.Step)))));
            }
            output.WriteLine(line.ToString());
            output.Flush();
        }
    }

    private static string Clock(TimeSpan t) =>
        $"{(int)t.TotalHours:D2}:{t.Minutes:D2}:{t.Seconds:D2}";
}
