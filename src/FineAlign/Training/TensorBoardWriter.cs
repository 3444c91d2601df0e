using System.Buffers.Binary;
using System.Numerics;
using System.Text;

namespace FineAlign.Training;

/// <summary>
/// A minimal TensorBoard event-file writer for scalars: TFRecord framing (little-endian uint64 length, masked CRC32C
/// of the length, the data, masked CRC32C of the data) around tensorflow.Event protobufs with <c>wall_time</c> in Unix
/// seconds (TorchSharp's SummaryWriter writes .NET ticks, ~6.4e17, which puts TensorBoard's time axes in year 2e10).
/// Each event is flushed at once, so a killed run keeps what it logged.
/// </summary>
/// <remarks>
/// Event: 1 wall_time (double), 2 step (int64), 3 file_version (string), 5 summary (Summary).
/// Summary: 1 value (repeated Summary.Value). Summary.Value: 1 tag (string), 2 simple_value (float).
/// (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto; TFRecord: tensorflow/core/lib/io/record_writer.cc.)
/// </remarks>
public sealed class TensorBoardWriter : IDisposable
{
    private readonly FileStream _file;
    private readonly Func<double> _clock;

    /// <param name="folder">Event folder (created), e.g. {run}/runs.</param>
    /// <param name="clock">Unix seconds now (tests pass a fixed clock).</param>
    public TensorBoardWriter(string folder, Func<double>? clock = null)
    {
        Directory.CreateDirectory(folder);
        _clock = clock ?? (() => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000.0);
        double now = _clock();
        // The name TensorFlow uses; a unique suffix keeps two writers of one second apart (a resumed run, a test).
        FilePath = Path.Combine(folder, $"events.out.tfevents.{(long)now}.{Environment.MachineName}.{Environment.ProcessId}.{Guid.NewGuid():N}"[..^24]);
        _file = new FileStream(FilePath, FileMode.CreateNew, FileAccess.Write, FileShare.Read);
        var ev = new Proto();
        ev.Double(1, now);
        ev.String(3, "brain.Event:2");
        WriteRecord(ev.ToArray());
    }

    public string FilePath { get; }

    /// <summary>Appends one scalar event.</summary>
    public void AddScalar(string tag, float value, long step)
    {
        var v = new Proto();
        v.String(1, tag);
        v.Float(2, value);
        var summary = new Proto();
        summary.Message(1, v.ToArray());
        var ev = new Proto();
        ev.Double(1, _clock());
        ev.Int64(2, step);
        ev.Message(5, summary.ToArray());
        WriteRecord(ev.ToArray());
    }

    private void WriteRecord(byte[] data)
    {
        Span<byte> header = stackalloc byte[12];
        BinaryPrimitives.WriteUInt64LittleEndian(header[..8], (ulong)data.Length);
        BinaryPrimitives.WriteUInt32LittleEndian(header[8..], MaskedCrc32C(header[..8]));
        _file.Write(header);
        _file.Write(data);
        Span<byte> footer = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(footer, MaskedCrc32C(data));
        _file.Write(footer);
        _file.Flush();
    }

    /// <summary>CRC32C (Castagnoli), masked as TFRecord does: rotate right by 15, add 0xa282ead8.</summary>
    public static uint MaskedCrc32C(ReadOnlySpan<byte> data)
    {
        uint crc = Crc32C(data);
        return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
    }

    /// <summary>Plain CRC32C of <paramref name="data"/> (BitOperations uses the CPU's crc32 instruction where there is one).</summary>
    public static uint Crc32C(ReadOnlySpan<byte> data)
    {
        uint crc = 0xFFFFFFFFu;
        foreach (byte b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }

    public void Dispose() => _file.Dispose();

    /// <summary>Protobuf wire format, just the field types an Event needs.</summary>
    private sealed class Proto
    {
        private readonly MemoryStream _s = new();
        private void Tag(int field, int wireType) => Varint((ulong)((field << 3) | wireType));
        private void Varint(ulong v)
        {
            while (v >= 0x80) { _s.WriteByte((byte)(v | 0x80)); v >>= 7; }
            _s.WriteByte((byte)v);
        }
        public void Double(int field, double v) { Tag(field, 1); Span<byte> b = stackalloc byte[8]; BinaryPrimitives.WriteDoubleLittleEndian(b, v); _s.Write(b); }
        public void Float(int field, float v) { Tag(field, 5); Span<byte> b = stackalloc byte[4]; BinaryPrimitives.WriteSingleLittleEndian(b, v); _s.Write(b); }
        public void Int64(int field, long v) { Tag(field, 0); Varint((ulong)v); }
        public void String(int field, string v) => Message(field, Encoding.UTF8.GetBytes(v));
        public void Message(int field, byte[] bytes) { Tag(field, 2); Varint((ulong)bytes.Length); _s.Write(bytes); }
        public byte[] ToArray() => _s.ToArray();
    }
}
