using System.Globalization;
using System.Text;

namespace FineAlign.Serving;

/// <summary>
/// Counters behind GET /metrics (Prometheus text format). The batch figures prove requests were batched:
/// <see cref="MaxRequestsPerBatch"/> &gt; 1 means one generation call served several HTTP requests.
/// </summary>
public sealed class ServerMetrics
{
    private readonly object _lock = new();
    private long _requests, _rejected, _batches, _rows, _newTokens, _promptTokens, _batchErrors;
    private int _maxRows, _maxRequests, _inFlight;
    private double _generationSeconds;

    public long Requests => Interlocked.Read(ref _requests);
    public long Rejected => Interlocked.Read(ref _rejected);
    public long Batches { get { lock (_lock) return _batches; } }
    public long BatchedRows { get { lock (_lock) return _rows; } }
    public int MaxRowsPerBatch { get { lock (_lock) return _maxRows; } }
    public int MaxRequestsPerBatch { get { lock (_lock) return _maxRequests; } }
    public long GeneratedTokens { get { lock (_lock) return _newTokens; } }
    public int InFlight => Volatile.Read(ref _inFlight);
    public long Reloads { get; internal set; }
    public long BatchErrors { get => Interlocked.Read(ref _batchErrors); internal set => Interlocked.Exchange(ref _batchErrors, value); }

    internal void RecordBatch(int rows, int requests, long newTokens, double seconds)
    {
        lock (_lock)
        {
            _batches++;
            _rows += rows;
            _newTokens += newTokens;
            _generationSeconds += seconds;
            _maxRows = Math.Max(_maxRows, rows);
            _maxRequests = Math.Max(_maxRequests, requests);
        }
    }

    internal void RecordPromptTokens(long n) => Interlocked.Add(ref _promptTokens, n);

    /// <summary>Admits a generation request unless <paramref name="limit"/> are already in flight.</summary>
    internal bool TryAdmit(int limit)
    {
        if (Interlocked.Increment(ref _inFlight) > limit)
        {
            Interlocked.Decrement(ref _inFlight);
            Interlocked.Increment(ref _rejected);
            return false;
        }
        Interlocked.Increment(ref _requests);
        return true;
    }

    internal void Release() => Interlocked.Decrement(ref _inFlight);

    public string ToPrometheus()
    {
        var sb = new StringBuilder();
        void Metric(string name, string type, string help, double value)
        {
            sb.Append("# HELP finealign_").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE finealign_").Append(name).Append(' ').Append(type).Append('\n');
            sb.Append("finealign_").Append(name).Append(' ').Append(value.ToString("R", CultureInfo.InvariantCulture)).Append('\n');
        }
        lock (_lock)
        {
            Metric("requests_total", "counter", "Generation requests admitted.", Requests);
            Metric("requests_rejected_total", "counter", "Generation requests answered 429 (over --max-concurrency).", Rejected);
            Metric("requests_in_flight", "gauge", "Generation requests being served now.", InFlight);
            Metric("batches_total", "counter", "Generation calls (batches).", _batches);
            Metric("batch_rows_total", "counter", "Sequences decoded, summed over batches.", _rows);
            Metric("batch_rows_max", "gauge", "Most sequences in one batch.", _maxRows);
            Metric("batch_requests_max", "gauge", "Most HTTP requests served by one batch.", _maxRequests);
            Metric("generation_tokens_total", "counter", "New tokens generated.", _newTokens);
            Metric("prompt_tokens_total", "counter", "Prompt tokens received.", Interlocked.Read(ref _promptTokens));
            Metric("generation_seconds_total", "counter", "Time spent in generation calls.", _generationSeconds);
            Metric("batch_errors_total", "counter", "Batches that failed.", BatchErrors);
            Metric("reloads_total", "counter", "Model reloads applied.", Reloads);
        }
        return sb.ToString();
    }
}
